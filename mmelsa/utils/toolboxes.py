"""Which OpenMMLab toolbox a config belongs to, and building its model there.

mmelsa's configs run in mmdet (detection), mmseg (segmentation) or mmpretrain (ImageNet
classification). A config says which by its ``default_scope``, as the toolboxes' own tools read
it; a config without one is told by its model type. The toolboxes are imported only when a
model is built, so any of them may be absent.
"""
import importlib

__all__ = ['TASK_OF_SCOPE', 'task_of', 'scope_of', 'build_model']

#: default_scope -> task
TASK_OF_SCOPE = {'mmdet': 'det', 'mmseg': 'seg', 'mmpretrain': 'cls'}
_SEGMENTERS = ('EncoderDecoder', 'CascadeEncoderDecoder', 'SegTTAModel')
_CLASSIFIERS = ('ImageClassifier', 'TimmClassifier', 'HuggingFaceClassifier')


def task_of(cfg):
    """``'det'``, ``'seg'`` or ``'cls'``: from ``default_scope``, else from the model type
    (detection when neither tells)."""
    scope = cfg.get('default_scope')
    if scope in TASK_OF_SCOPE:
        return TASK_OF_SCOPE[scope]
    model_type = str((cfg.get('model') or {}).get('type', '')).split('.')[-1]
    if model_type in _SEGMENTERS:
        return 'seg'
    if model_type in _CLASSIFIERS:
        return 'cls'
    return 'det'


def scope_of(cfg):
    """The toolbox (``'mmdet'``, ``'mmseg'``, ``'mmpretrain'``) whose registry builds the
    config's model."""
    task = task_of(cfg)
    return next(scope for scope, t in TASK_OF_SCOPE.items() if t == task)


def build_model(cfg):
    """Build ``cfg.model`` in its toolbox's registry (all of the toolbox's modules registered,
    its scope the default)."""
    scope = scope_of(cfg)
    importlib.import_module(f'{scope}.utils').register_all_modules(init_default_scope=True)
    return importlib.import_module(f'{scope}.registry').MODELS.build(cfg.model)
