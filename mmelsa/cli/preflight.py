"""Pre-flight checks of a config, run before the Runner is built.

Mistakes a user can make (a wrong config path, a dataset that was never generated or
downloaded, a malformed annotation file, a missing image, a typo in ``--cfg-options`` or in a
backbone argument) end in one readable line (:class:`UsageError`) instead of a traceback from deep
inside a dataset or model constructor half a minute later. mmelsa's tools run them; they are
plain functions so that any script can.
"""
import difflib
import json
import os
import os.path as osp

RUNNER_KEYS = {
    'model', 'work_dir', 'train_dataloader', 'val_dataloader', 'test_dataloader', 'train_cfg',
    'val_cfg', 'test_cfg', 'auto_scale_lr', 'optim_wrapper', 'param_scheduler', 'val_evaluator',
    'test_evaluator', 'default_hooks', 'custom_hooks', 'data_preprocessor', 'load_from',
    'resume', 'launcher', 'env_cfg', 'log_processor', 'log_level', 'visualizer',
    'default_scope', 'randomness', 'experiment_name', 'cfg', 'compile', 'tta_model',
    'tta_pipeline', 'custom_imports', 'runner_type', 'model_wrapper_cfg', 'strategy',
    # read by mmelsa's SafeRunner
    'allow_partial_load', 'overwrite_checkpoints',
}


class UsageError(Exception):
    """A problem the user can fix from the command line; printed without a traceback."""



def load_config(path, cfg_options=None):
    from mmengine.config import Config
    if not osp.isfile(path):
        hint = ''
        folder = osp.dirname(path) or '.'
        if osp.isdir(folder):
            near = difflib.get_close_matches(osp.basename(path), os.listdir(folder), n=1)
            if near:
                hint = f' (did you mean {osp.join(folder, near[0])}?)'
        raise UsageError(f'config file not found: {path}{hint}')
    cfg = Config.fromfile(path)
    if cfg_options:
        check_cfg_options(cfg, cfg_options)
        cfg.merge_from_dict(cfg_options)
    return cfg


def _children(node):
    if isinstance(node, dict):
        return [str(k) for k in node.keys()]
    if isinstance(node, (list, tuple)):
        return [str(i) for i in range(len(node))]
    return []


def check_cfg_options(cfg, options):
    """Reject `--cfg-options` keys that are almost certainly typos.

    A key may legitimately add something new (``model.backbone.with_cp=True`` sets a
    constructor argument the config leaves at its default), so a missing key is only an error
    when (a) its top level is neither in the config nor a key the Runner reads, or (b) a
    missing component has a close spelling among its existing siblings (``model.backbnoe``),
    or (c) the path runs into a value that is not a dict or list.
    """
    tree = cfg.to_dict()
    for full_key in options:
        parts = full_key.split('.')
        if parts[0] not in cfg and parts[0] not in RUNNER_KEYS:
            near = difflib.get_close_matches(parts[0], list(cfg.keys()) + sorted(RUNNER_KEYS),
                                             n=1, cutoff=0.6)
            hint = f'; did you mean "{near[0]}"?' if near else ''
            raise UsageError(f'unknown --cfg-options key "{full_key}": the config has no '
                             f'top-level "{parts[0]}"{hint}')
        node = tree
        for depth, part in enumerate(parts):
            if isinstance(node, (list, tuple)):
                if not part.isdigit() or int(part) >= len(node):
                    raise UsageError(
                        f'bad --cfg-options key "{full_key}": "{".".join(parts[:depth])}" is a '
                        f'list of {len(node)} items, "{part}" is not an index into it')
                node = node[int(part)]
                continue
            if not isinstance(node, dict):
                shown = repr(node) if len(repr(node)) < 60 else repr(node)[:57] + '...'
                raise UsageError(
                    f'bad --cfg-options key "{full_key}": "{".".join(parts[:depth])}" is '
                    f'{shown}, not a dict, so it has no "{part}"')
            if part not in node:
                near = difflib.get_close_matches(part, _children(node), n=1, cutoff=0.75)
                if near and near[0] != part:
                    where = '.'.join(parts[:depth]) or 'the config'
                    raise UsageError(f'unknown --cfg-options key "{full_key}": {where} has no '
                                     f'"{part}"; did you mean "{near[0]}"?')
                break  # a genuinely new key: allowed (it may be a constructor default)
            node = node[part]


def _is_remote(path):
    return isinstance(path, str) and '://' in path


def inner_datasets(ds_cfg):
    """Yield the leaf dataset configs under wrappers (RepeatDataset, ConcatDataset, ...)."""
    if ds_cfg is None:
        return
    if 'datasets' in ds_cfg:
        for sub in ds_cfg['datasets']:
            yield from inner_datasets(sub)
    elif 'dataset' in ds_cfg:
        yield from inner_datasets(ds_cfg['dataset'])
    else:
        yield ds_cfg


def _join(root, path):
    if not path:
        return root
    if root is None or osp.isabs(path) or _is_remote(path):
        return path
    return osp.join(root, path)


TOY_HINT = ('generate the toy data with `python -m mmelsa.datasets.toy --out data`, or point '
            'the config at your copy of the dataset, e.g. --cfg-options '
            'train_dataloader.dataset.data_root=/path/ (see configs/*/README.md)')


def _json_kind(value):
    return 'null' if value is None else type(value).__name__


def _check_coco_json(path, where, image_folder=None):
    """The annotation file is a COCO instances object whose images exist in ``image_folder``."""
    # Parse small files only: a real COCO train json is ~450 MB and the dataset parses it
    # anyway; the toy and val files are small enough to check here in milliseconds.
    if os.path.getsize(path) > 64 * 2**20:
        return
    try:
        with open(path) as f:
            data = json.load(f)
    except ValueError as e:
        raise UsageError(f'{where}: annotation file {path} is not valid JSON ({e})')
    if not isinstance(data, dict):
        raise UsageError(f'{where}: annotation file {path} holds a JSON {_json_kind(data)}; '
                         'expected a COCO instances object with "images", "annotations" and '
                         '"categories"')
    missing = [k for k in ('images', 'annotations', 'categories') if k not in data]
    if missing:
        raise UsageError(f'{where}: annotation file {path} is not a COCO instances file '
                         f'(missing {", ".join(missing)})')
    for key in ('images', 'annotations', 'categories'):
        if not isinstance(data[key], list):
            raise UsageError(f'{where}: annotation file {path}: "{key}" is a JSON '
                             f'{_json_kind(data[key])}, expected a list')
    for i, image in enumerate(data['images']):
        if not isinstance(image, dict) or not isinstance(image.get('file_name'), str):
            raise UsageError(f'{where}: annotation file {path}: images[{i}] has no "file_name" '
                             'string')
        if image_folder is not None:
            image_path = osp.join(image_folder, image['file_name'])
            if not osp.isfile(image_path):
                raise UsageError(f'{where}: image {image_path} (images[{i}] of {path}) does '
                                 'not exist')
            problem = _image_problem(image_path)
            if problem:
                raise UsageError(f'{where}: image {image_path} (images[{i}] of {path}) '
                                 f'{problem}')


def _image_problem(path):
    """Why ``path`` is not a readable image, from its header alone (cheap), else None."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as image:
            image.size  # noqa: B018 (parsing the header is the check)
    except UnidentifiedImageError:
        return 'is not an image file (empty or corrupt)'
    except OSError as err:
        return f'cannot be read ({err})'
    return None


def check_datasets(cfg, which):
    """Check the files the named dataloaders read exist, before the Runner is built."""
    for loader_key in which:
        loader = cfg.get(loader_key)
        if not loader or 'dataset' not in loader:
            continue
        for ds in inner_datasets(loader['dataset']):
            root = ds.get('data_root')
            where = f'{loader_key}.dataset ({ds.get("type", "?")}, data_root={root!r})'
            if _is_remote(root):
                continue  # object storage (petrel, s3 ...): nothing to check locally
            if root and not osp.isdir(root):
                raise UsageError(f'{where}: data root {root} does not exist; {TOY_HINT}')
            ann = ds.get('ann_file')
            if ann:
                ann_path = _join(root, ann)
                if not osp.isfile(ann_path):
                    raise UsageError(
                        f'{where}: annotation file {ann_path} does not exist; {TOY_HINT}')
                if ann_path.endswith('.json') and 'Coco' in str(ds.get('type', '')):
                    images = (ds.get('data_prefix') or {}).get('img')
                    folder = _join(root, images) if images and not _is_remote(images) else None
                    _check_coco_json(ann_path, where, folder)
            prefix = ds.get('data_prefix') or {}
            if isinstance(prefix, str):  # mmpretrain's datasets take a plain folder too
                prefix = {'img_path': prefix}
            for name, sub in prefix.items():
                if not sub or _is_remote(sub):
                    continue
                path = _join(root, sub)
                if not osp.isdir(path):
                    raise UsageError(f'{where}: data_prefix.{name} folder {path} does not '
                                     f'exist; {TOY_HINT}')
                if not os.listdir(path):
                    raise UsageError(f'{where}: data_prefix.{name} folder {path} is empty')
    # The COCO evaluator reads its own copy of the val/test annotation path.
    for ev_key in ('val_evaluator', 'test_evaluator'):
        if (ev_key == 'val_evaluator') != ('val_dataloader' in which):
            continue
        evs = cfg.get(ev_key)
        for ev in (evs if isinstance(evs, (list, tuple)) else [evs]):
            if isinstance(ev, dict) and ev.get('ann_file') and not _is_remote(ev['ann_file']):
                if not osp.isfile(ev['ann_file']):
                    raise UsageError(f'{ev_key}: annotation file {ev["ann_file"]} does not '
                                     f'exist; {TOY_HINT}')


def _backbone_cfg(cfg):
    model = cfg.get('model', {}) or {}
    if model.get('type') in ('SegTTAModel', 'DetTTAModel'):
        model = model.get('module', {}) or {}
    return model.get('backbone') or {}


def check_backbone_arguments(cfg):
    """A misspelt ELSASwinTransformer argument (``embed_dim=``) fails deep inside the model
    build with a nested TypeError; name it, and the closest real argument, up front."""
    import inspect

    from mmelsa.models import ELSASwinTransformer
    backbone = _backbone_cfg(cfg)
    if str(backbone.get('type', '')).split('.')[-1] != 'ELSASwinTransformer':
        return
    accepted = [p for p in inspect.signature(ELSASwinTransformer.__init__).parameters
                if p != 'self']
    for key in backbone:
        if key in ('type', '_scope_') or key in accepted:
            continue
        near = difflib.get_close_matches(key, accepted, n=1, cutoff=0.6)
        hint = f'; did you mean "{near[0]}"?' if near else ''
        raise UsageError(f'model.backbone: ELSASwinTransformer has no argument "{key}"{hint}')


def check_pretrained(cfg):
    """A Pretrained init_cfg pointing at a local file that is not there fails late (after
    the dataloaders are built) with a bare FileNotFoundError; say what to do instead."""
    init = _backbone_cfg(cfg).get('init_cfg') or []
    for entry in init if isinstance(init, (list, tuple)) else [init]:  # mmengine takes lists
        _check_pretrained_entry(entry)


def _check_pretrained_entry(init):
    if not isinstance(init, dict):
        return
    ckpt = init.get('checkpoint')
    if init.get('type') == 'Pretrained' and ckpt and not _is_remote(ckpt) and \
            not ckpt.startswith(('torchvision://', 'open-mmlab://', 'mmcls://')) and \
            not osp.isfile(ckpt):
        raise UsageError(
            f'model.backbone.init_cfg.checkpoint {ckpt} does not exist. Download the '
            'ImageNet-1K ELSA-Swin checkpoint and pass its path with --cfg-options '
            'model.backbone.init_cfg.checkpoint=/path/to/ckpt.pth (or train from scratch with '
            'model.backbone.init_cfg=None); see configs/elsa_swin/README.md')


def check_amp_device(cfg):
    """mmengine's AmpOptimWrapper (``--amp``, and every full recipe's optim_wrapper) asserts
    a GPU / NPU / MLU / MUSA device when it is built; say it in one line, with the way out."""
    wrappers = cfg.get('optim_wrapper') or {}
    types = [str(wrappers.get('type', ''))] if 'type' in wrappers else [
        str(w.get('type', '')) for w in wrappers.values() if isinstance(w, dict)]
    if not any(t.split('.')[-1] == 'AmpOptimWrapper' for t in types):
        return
    from mmengine.device import (is_cuda_available, is_mlu_available, is_musa_available,
                                 is_npu_available)
    if not (is_cuda_available() or is_npu_available() or is_mlu_available()
            or is_musa_available()):
        raise UsageError(
            'optim_wrapper.type=AmpOptimWrapper (--amp, or the config\'s own) needs a GPU and '
            'none is available here; to train on the CPU in float32, drop --amp or pass '
            '--cfg-options optim_wrapper.type=OptimWrapper')


def check_resume_checkpoint(path):
    """``--resume CKPT`` names a file that exists and is a complete checkpoint."""
    from ..engine.saving import checkpoint_problem
    if not osp.isfile(path):
        raise UsageError(f'--resume checkpoint {path} does not exist')
    problem = checkpoint_problem(path)
    if problem:
        raise UsageError(f'--resume checkpoint {path} is damaged ({problem}); a bare --resume '
                         'takes the newest intact checkpoint')
