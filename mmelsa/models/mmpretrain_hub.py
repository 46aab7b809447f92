"""mmelsa's classifiers by name in mmpretrain: ``mmpretrain.list_models('*elsa*')``,
``mmpretrain.get_model('elsa-swin-tiny_8xb128_in1k')`` and the Inferencers.

mmpretrain keeps its names in ``mmpretrain.apis.ModelHub``, which a downstream package extends
with ``ModelHub.register_model_index(model_index_path, config_prefix)``. That call takes every
entry of an index, and mmelsa's also lists detectors and segmentors, which an mmpretrain
``get_model`` cannot build. So the same steps are done here for the entries whose config is
written for mmpretrain (it names an ``mmpretrain::`` base), with the config paths made absolute
against the folder the index is in: ``mmelsa/.mim`` (an installed package, whose configs mim
also uses) or the checkout.

:func:`register_mmpretrain_models` is called by ``import mmelsa`` (:mod:`mmelsa.registry`) when
mmpretrain can be imported, and is idempotent.
"""
import ast
import os.path as osp

PACKAGE = osp.dirname(osp.dirname(osp.abspath(__file__)))


def model_index_root():
    """The folder holding mmelsa's ``model-index.yml`` (its Config paths are relative to it),
    or None."""
    for root in (osp.join(PACKAGE, '.mim'), osp.dirname(PACKAGE)):
        if osp.isfile(osp.join(root, 'model-index.yml')):
            return root
    return None


def _bases(text):
    """The ``_base_`` entries a config file assigns (a string or a list of strings)."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return []
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and getattr(node.targets[0], 'id', None) == '_base_'):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                return []
            return [value] if isinstance(value, str) else list(value)
    return []


def is_mmpretrain_config(path, _depth=0):
    """Whether the config at ``path`` is written for mmpretrain: it names an mmpretrain base,
    itself or through the local bases it inherits (``_base_ = './other.py'``)."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return False
    if "'mmpretrain::" in text or '"mmpretrain::' in text:
        return True
    return _depth < 8 and any(
        is_mmpretrain_config(osp.join(osp.dirname(path), base), _depth + 1)
        for base in _bases(text) if isinstance(base, str) and '::' not in base)


def classification_models(root=None):
    """The classification entries (modelindex ``Model`` objects, Config made absolute) of
    mmelsa's model index."""
    from modelindex.load_model_index import load
    root = root or model_index_root()
    if root is None:
        return []
    index = load(osp.join(root, 'model-index.yml'))
    index.build_models_with_collections()
    models = []
    for model in index.models:
        if model.config is None:
            continue
        config = model.config if osp.isabs(model.config) else osp.abspath(
            osp.join(root, model.config))
        if is_mmpretrain_config(config):
            model.config = config
            models.append(model)
    return models


def register_mmpretrain_models():
    """Add mmelsa's classifiers to mmpretrain's ModelHub (names lowercased, as mmpretrain's
    own); names already there are left alone. Returns the names added."""
    from mmpretrain.apis.model import ModelHub
    added = []
    for model in classification_models():
        name = model.name.lower()
        if name in ModelHub._models_dict:
            continue
        ModelHub._models_dict[name] = model
        added.append(name)
    return added


__all__ = ['register_mmpretrain_models', 'classification_models', 'model_index_root']
