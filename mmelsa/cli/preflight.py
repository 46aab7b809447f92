"""Pre-flight checks of a config, run before the Runner is built.

Mistakes a user can make (a wrong config path, a dataset that was never generated or
downloaded, a malformed annotation file, a missing image, a typo in ``--cfg-options`` or in a
backbone argument) end in one readable line (:class:`UsageError`) instead of a traceback from deep
inside a dataset or model constructor half a minute later. mmelsa's tools run them; they are
plain functions so that any script can.

Data (:func:`check_datasets`): bad data is refused before training or testing, in one line that
names the file, the record (``images[3] (id 4)``, ``annotations[7] (id 8)``, ``line 12 of
meta/train.txt``) and what was expected, because left alone it ends in a traceback from inside
the data loader or pycocotools (often only after the whole inference) or, worse, in a wrong
metric (NaN ground-truth boxes give an untrained detector bbox mAP 0.5).

* COCO annotation files (the dataset's and the COCO evaluator's own copy): images, annotations
  and categories have unique integer ids; an image has a ``file_name`` and positive ``width`` /
  ``height``; an annotation's ``image_id`` and ``category_id`` name an image and a category of
  the file, its ``bbox`` is 4 finite numbers with width and height > 0, its ``area`` a finite
  number >= 0, its ``segmentation`` polygons of at least 3 finite x, y points (or an RLE). Files
  over 64 MB (COCO train2017's 450 MB) are not parsed here: the dataset parses them anyway and
  a second parse would cost half a minute and gigabytes.
* Images: the images a COCO file lists, the image / label-map pairs of an mmseg folder dataset
  (ADE20K's layout; the pair must also have one size) and the images of an mmpretrain list or
  class-folder dataset. Each must exist, its header must parse, and the pixel count its header
  claims must not exceed ``MMELSA_MAX_IMAGE_PIXELS`` (default 178956970, PIL's own default), so
  that a decompression bomb (a 48 KB PNG claiming 20000 x 20000 pixels, 1.2 GB decoded) is
  refused before anything decodes it. How much is decoded depends on the size of the set,
  because decoding costs about 60 times the header and end reads (2 ms against 35 us for a
  640 x 480 JPEG on one core, so 4 minutes against 4 s for COCO's 118k train images):

  - up to ``FULL_DECODE_MAX_IMAGES`` (1000) images in a dataset: every image is decoded in full
    (the toy sets, quick trials: a few seconds at most);
  - more: every header is read and the end of every file is checked for the end marker that a
    complete JPEG (``FFD9``) or PNG (the ``IEND`` chunk) ends with, which catches truncated
    files (an interrupted download or copy, the common damage) for one more small read; a
    file without it (or of another format) is decoded in full to decide. A file damaged in
    its middle but complete in length is then left to the loader;
  - more than ``HEADER_CHECK_MAX_IMAGES`` (50000; ImageNet's 1.28M): every image is checked
    to exist, and the headers and ends of an evenly spaced 50000 of them are read (all of them
    would take minutes on a cold disk at every start and resume).
"""
import contextlib
import difflib
import inspect
import json
import math
import os
import os.path as osp
from typing import NamedTuple

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


def _shown(value, limit=60):
    """A JSON value as the file spells it (NaN, null, "text"), cut to one short line."""
    text = json.dumps(value)
    return text if len(text) <= limit else text[:limit - 3] + '...'


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and \
        math.isfinite(value)


# ----------------------------------------------------------------- COCO annotation records
def _load_coco(path, where):
    """The parsed file, checked to be a COCO instances object; None when too large to parse
    here (the dataset parses it anyway: a real COCO train json is ~450 MB)."""
    if os.path.getsize(path) > 64 * 2**20:
        return None
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
    return data


def _ids(records, key):
    """``({id: index}, None)`` when every record is an object with an integer id of its own
    (pycocotools indexes all three lists by id: a missing one is a KeyError, a repeated one
    silently drops a record), else ``(None, problem)``."""
    seen = {}
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            return None, f'{key}[{i}] is a JSON {_json_kind(record)}; expected an object'
        name = f'{key}[{i}]'
        if isinstance(record.get('file_name'), str):
            name += f' ({record["file_name"]})'
        if 'id' not in record:
            return None, f'{name} has no "id"; expected a unique integer id'
        rid = record['id']
        if not _is_int(rid):
            return None, f'{name} has "id" {_shown(rid)}; expected a unique integer id'
        if rid in seen:
            return None, (f'{name} has "id" {rid}; {key}[{seen[rid]}] has it too; expected '
                          'unique integer ids')
        seen[rid] = i
    return seen, None


def _image_record_problem(image):
    width, height = image.get('width'), image.get('height')
    if _is_finite(width) and _is_finite(height) and width > 0 and height > 0:
        return None
    return (f'"width" {_shown(width)} and "height" {_shown(height)}; expected positive numbers '
            '(mmdet reads both)')


def _bbox_problem(bbox):
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(map(_is_finite, bbox))):
        return f'"bbox" {_shown(bbox)}; expected [x, y, width, height]: 4 finite numbers'
    if bbox[2] <= 0 or bbox[3] <= 0:
        return (f'"bbox" {_shown(bbox)} has width {bbox[2]} and height {bbox[3]}; expected '
                'width and height > 0')
    return None


def _area_problem(area):
    if _is_finite(area) and area >= 0:
        return None
    return f'"area" {_shown(area)}; expected a finite number >= 0'


def _segmentation_problem(seg):
    """Polygons ``[[x1, y1, x2, y2, x3, y3, ...], ...]`` or an RLE object (crowd regions);
    none at all is a box-only annotation. A short polygon fails in pycocotools only when the
    metric runs, after the whole inference (and one of 4 numbers is silently read as a box)."""
    if seg is None:
        return None
    if isinstance(seg, dict):
        if 'counts' in seg and 'size' in seg:
            return None
        return '"segmentation" is an RLE object without "counts" and "size"'
    if not isinstance(seg, list):
        return (f'"segmentation" {_shown(seg)}; expected a list of polygons [x1, y1, x2, y2, '
                '...] or an RLE object')
    for k, poly in enumerate(seg):
        if not (isinstance(poly, list) and all(map(_is_finite, poly))):
            return (f'"segmentation[{k}]" {_shown(poly)}; expected a polygon: a list of finite '
                    'numbers x1, y1, x2, y2, ...')
        if len(poly) % 2:
            return (f'"segmentation[{k}]" has an odd count of numbers ({len(poly)}); expected '
                    'x, y pairs')
        if len(poly) < 6:
            return (f'"segmentation[{k}]" has {len(poly)} numbers ({len(poly) // 2} points); '
                    'expected a polygon of at least 3 points (6 numbers)')
    return None


def _few(values, limit=10):
    values = sorted(values)
    return str(values) if len(values) <= limit else str(values[:limit])[:-1] + ', ...]'


def _annotation_problem(ann, image_ids, cat_ids):
    image_id, cat_id = ann.get('image_id'), ann.get('category_id')
    if not _is_int(image_id) or image_id not in image_ids:
        return f'"image_id" {_shown(image_id)}: no image has that id'
    if not _is_int(cat_id) or cat_id not in cat_ids:
        return (f'"category_id" {_shown(cat_id)} is not among the ids of "categories" '
                f'{_few(cat_ids)}')
    return _bbox_problem(ann.get('bbox')) or _area_problem(ann.get('area')) or \
        _segmentation_problem(ann.get('segmentation'))


def _coco_problem(data):
    """The first record of a COCO instances object that mmdet or pycocotools would fail on,
    or score wrongly, as ``'record: what is wrong; what was expected'``; None if none."""
    image_ids, problem = _ids(data['images'], 'images')
    if problem:
        return problem
    for i, image in enumerate(data['images']):
        problem = _image_record_problem(image)
        if problem:
            return f'images[{i}] (id {image["id"]}): {problem}'
    cat_ids, problem = _ids(data['categories'], 'categories')
    if problem:
        return problem
    for i, cat in enumerate(data['categories']):
        if not isinstance(cat.get('name'), str):  # mmdet maps its classes by name
            return f'categories[{i}] (id {cat["id"]}) has no "name" string'
    _, problem = _ids(data['annotations'], 'annotations')
    if problem:
        return problem
    for i, ann in enumerate(data['annotations']):
        problem = _annotation_problem(ann, image_ids, cat_ids)
        if problem:
            return f'annotations[{i}] (id {ann["id"]}): {problem}'
    return None


def _check_coco_json(path, where, image_folder=None):
    """The annotation file is a COCO instances object of sound records whose images exist in
    ``image_folder`` and can be read (see the module docstring)."""
    data = _load_coco(path, where)
    if data is None:
        return
    for i, image in enumerate(data['images']):  # before the ids: the file name names a record
        if not isinstance(image, dict) or not isinstance(image.get('file_name'), str):
            raise UsageError(f'{where}: annotation file {path}: images[{i}] has no "file_name" '
                             'string')
    problem = _coco_problem(data)
    if problem:
        raise UsageError(f'{where}: annotation file {path}: {problem}')
    if image_folder is not None:
        rule = _image_rule(len(data['images']))
        for i, image in enumerate(data['images']):
            _check_image(osp.join(image_folder, image['file_name']), where, rule, i,
                         record=f'images[{i}] of {path}')


# ------------------------------------------------------------------------------------ images
#: PIL's own default bound (``Image.MAX_IMAGE_PIXELS``, about 0.5 GB of RGB pixels).
DEFAULT_MAX_IMAGE_PIXELS = 178956970
MAX_IMAGE_PIXELS_ENV = 'MMELSA_MAX_IMAGE_PIXELS'
#: A dataset of at most this many images has every image decoded in full.
FULL_DECODE_MAX_IMAGES = 1000
#: A larger dataset has the headers and file ends of an evenly spaced this many read.
HEADER_CHECK_MAX_IMAGES = 50000

# The last bytes of a complete file: JPEG's end-of-image marker (0xFF is stuffed inside the
# compressed data, so FFD9 appears nowhere else near the end; some cameras pad after it, hence
# "in the last bytes"), and PNG's IEND chunk, which is always the last one.
_END_MARKERS = {'JPEG': b'\xff\xd9', 'MPO': b'\xff\xd9',
                'PNG': b'\x00\x00\x00\x00IEND\xaeB`\x82'}


class _ImageRule(NamedTuple):
    full_decode: bool  # decode every image
    step: int  # read the header of every step-th image (the others: checked to exist)
    max_pixels: int


def max_image_pixels():
    """The largest pixel count an image header may claim: ``MMELSA_MAX_IMAGE_PIXELS``, else
    PIL's default."""
    text = os.environ.get(MAX_IMAGE_PIXELS_ENV, '').strip()
    if not text:
        return DEFAULT_MAX_IMAGE_PIXELS
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise UsageError(f'{MAX_IMAGE_PIXELS_ENV}={text!r}: expected a positive whole number '
                         'of pixels')
    return value


def _image_rule(count):
    """How thoroughly to check a dataset of ``count`` images (the module docstring says why)."""
    return _ImageRule(full_decode=count <= FULL_DECODE_MAX_IMAGES,
                      step=max(1, math.ceil(count / HEADER_CHECK_MAX_IMAGES)),
                      max_pixels=max_image_pixels())


@contextlib.contextmanager
def _own_pixel_bound():
    """PIL warns above its MAX_IMAGE_PIXELS and raises (DecompressionBombError, not an
    OSError) above twice that, inside Image.open: lift it while :func:`inspect_image` applies
    its own bound, which is configurable and names the file."""
    from PIL import Image
    saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def _ends_complete(path, fmt):
    """Whether the file ends as a complete JPEG / PNG does (False for other formats)."""
    marker = _END_MARKERS.get(fmt)
    if marker is None:
        return False
    with open(path, 'rb') as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 64))
        tail = f.read()
    return tail.endswith(marker) if fmt == 'PNG' else marker in tail


def inspect_image(path, max_pixels=None, full_decode=True):
    """``(size, problem)``: the (width, height) the header of image ``path`` gives (None if
    unreadable) and why the image cannot be used (None if it can). The header is read and the
    pixel bound checked first, so a decompression bomb is never decoded; the pixels are decoded
    when ``full_decode``, or when the file does not end as a complete JPEG / PNG."""
    from PIL import Image, UnidentifiedImageError
    max_pixels = max_pixels or max_image_pixels()
    with _own_pixel_bound():
        try:
            image = Image.open(path)
        except UnidentifiedImageError:
            return None, 'is not an image file (empty or corrupt)'
        except Exception as err:  # noqa: BLE001 - any failure to read the header is one
            return None, f'cannot be read ({err})'
        with image:
            width, height = image.size
            if width * height > max_pixels:
                return image.size, (
                    f'claims {width} x {height} pixels, more than {max_pixels} (a decompression '
                    f'bomb?); if the image is real, raise the bound with '
                    f'{MAX_IMAGE_PIXELS_ENV}=N')
            if full_decode or not _ends_complete(path, image.format):
                try:
                    image.load()
                except Exception as err:  # noqa: BLE001 - the data loader would fail too
                    return image.size, f'cannot be decoded, truncated or corrupt ({err})'
    return (width, height), None


def _check_image(path, where, rule, index, noun='image', record=None):
    """The size of image ``path`` (None when ``rule`` skips its header); a missing or unusable
    image is a UsageError naming it and where it was listed (``record``)."""
    named = f'{noun} {path}' + (f' ({record})' if record else '')
    if not osp.isfile(path):
        raise UsageError(f'{where}: {named} does not exist')
    if index % rule.step:
        return None
    size, problem = inspect_image(path, rule.max_pixels, rule.full_decode)
    if problem:
        raise UsageError(f'{where}: {named} {problem}')
    return size


# ------------------------------------------------------- mmseg folders: image + label map
def _dataset_default(ds, arg, fallback, registry='mmseg.registry'):
    """``ds[arg]``, else the default of the dataset class's own argument (Cityscapes' suffixes
    are not ADE20K's), else ``fallback``."""
    if arg in ds:
        return ds[arg]
    try:
        import importlib
        cls = importlib.import_module(registry).DATASETS.get(str(ds.get('type')))
        default = inspect.signature(cls).parameters[arg].default
    except Exception:  # noqa: BLE001 - toolbox absent or type unknown: the usual default
        return fallback
    return fallback if default is inspect.Parameter.empty else default


def _seg_pairs(ds, root, img_dir, seg_dir):
    """``(image, label map or None)`` paths as mmseg's BaseSegDataset lists them: the names of
    ``ann_file`` if given, else every ``img_suffix`` file under ``img_dir``."""
    img_suffix = _dataset_default(ds, 'img_suffix', '.jpg')
    seg_suffix = _dataset_default(ds, 'seg_map_suffix', '.png')
    ann = _join(root, ds.get('ann_file') or '')
    if ds.get('ann_file') and osp.isfile(ann):
        with open(ann) as f:
            names = [line.strip() + img_suffix for line in f if line.strip()]
    else:
        names = sorted(osp.relpath(osp.join(d, n), img_dir)
                       for d, _, files in os.walk(img_dir) for n in files
                       if n.endswith(img_suffix))
    return [(osp.join(img_dir, n),
             None if seg_dir is None else osp.join(seg_dir, n.replace(img_suffix, seg_suffix)))
            for n in names]


def _check_seg_folders(ds, root, where):
    """Every image of an mmseg folder dataset, its label map, and that the two have one size
    (the metric compares the prediction, at the image's size, with the label map: a traceback
    after the whole inference)."""
    prefix = ds.get('data_prefix') or {}
    if not isinstance(prefix, dict) or _is_remote(prefix.get('img_path')) or \
            _is_remote(prefix.get('seg_map_path')):
        return
    img_dir = _join(root, prefix.get('img_path') or '')
    seg_dir = prefix.get('seg_map_path')
    seg_dir = None if seg_dir is None else _join(root, seg_dir)
    if not img_dir or not osp.isdir(img_dir):
        return
    pairs = _seg_pairs(ds, root, img_dir, seg_dir)
    rule = _image_rule(len(pairs))
    for k, (image, label) in enumerate(pairs):
        size = _check_image(image, where, rule, k)
        if label is None:
            continue
        name = osp.relpath(image, root) if root else image
        label_size = _check_image(label, where, rule, k, noun='label map',
                                  record=f'the label map of {name}')
        if size and label_size and size != label_size:
            raise UsageError(f'{where}: label map {label} (the label map of {name}) is '
                             f'{label_size[0]} x {label_size[1]} pixels, but its image is '
                             f'{size[0]} x {size[1]}; expected the same size')


# ------------------------------------------------ mmpretrain lists and class folders
#: The files mmpretrain's CustomDataset / ImageNet take from class folders (``extensions``)
IMG_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.pgm', '.tif')
CLS_LIST_DATASETS = ('CustomDataset', 'ImageNet', 'ImageNet21k')


def _cls_list_images(ann, folder, ds, where):
    """``(path, record)`` of the lines ``"<file> <class index>"`` (``"<file>"`` without labels)
    of an mmpretrain list file, each line checked as mmpretrain parses it (a blank line too:
    it is a sample without a label there)."""
    with_label = ds.get('with_label', True)
    classes = (ds.get('metainfo') or {}).get('classes')
    items = []
    with open(ann) as f:
        for n, line in enumerate(f, 1):
            text = line.strip()
            name, _, label = text.rpartition(' ') if with_label else (text, '', '')
            if with_label and (not name or not label.isdigit()):
                raise UsageError(f'{where}: annotation file {ann}: line {n}: {text!r}; '
                                 'expected "<file> <class index>"')
            if with_label and isinstance(classes, (list, tuple)) and int(label) >= len(classes):
                raise UsageError(f'{where}: annotation file {ann}: line {n}: class index '
                                 f'{label}, but there are {len(classes)} classes '
                                 '(metainfo.classes)')
            items.append((osp.join(folder, name), f'line {n} of {ann}'))
    return items


def _check_cls_images(ds, root, where):
    """Every image an mmpretrain CustomDataset / ImageNet reads: its list file's, else those of
    its class folders."""
    if str(ds.get('type', '')).split('.')[-1] not in CLS_LIST_DATASETS:
        return
    prefix = ds.get('data_prefix') or ''
    if isinstance(prefix, dict):
        prefix = prefix.get('img_path') or ''
    folder = _join(root, prefix) if prefix else root
    if not folder or _is_remote(folder) or not osp.isdir(folder):
        return
    ann = _join(root, ds.get('ann_file') or '')
    if ds.get('ann_file') and osp.isfile(ann):
        items = _cls_list_images(ann, folder, ds, where)
    else:  # one sub-folder per class: the files of ``folder`` itself are not samples
        extensions = tuple(e.lower() for e in ds.get('extensions', IMG_EXTENSIONS))
        items = [(osp.join(d, n), None) for d, _, files in sorted(os.walk(folder))
                 if d != folder for n in sorted(files) if n.lower().endswith(extensions)]
    rule = _image_rule(len(items))
    for k, (path, record) in enumerate(items):
        _check_image(path, where, rule, k, record=record)


# ------------------------------------------------------------------------ the datasets
def check_datasets(cfg, which):
    """Check the files the named dataloaders read exist and are sound (see the module
    docstring), before the Runner is built."""
    from ..utils.toolboxes import task_of
    task = task_of(cfg)
    parsed = set()  # annotation files read already (the val set's is the evaluator's too)
    for loader_key in which:
        loader = cfg.get(loader_key)
        if not loader or 'dataset' not in loader:
            continue
        for ds in inner_datasets(loader['dataset']):
            _check_dataset(ds, loader_key, task, parsed)
    _check_evaluators(cfg, which, parsed)


def _check_dataset(ds, loader_key, task, parsed):
    root = ds.get('data_root')
    where = f'{loader_key}.dataset ({ds.get("type", "?")}, data_root={root!r})'
    if _is_remote(root):
        return  # object storage (petrel, s3 ...): nothing to check locally
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
            parsed.add(osp.realpath(ann_path))
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
    if task == 'seg':
        _check_seg_folders(ds, root, where)
    elif task == 'cls':
        _check_cls_images(ds, root, where)


def _check_evaluators(cfg, which, parsed):
    """The COCO evaluator reads its own copy of the val/test annotation path: NaN boxes there
    score an untrained model, whatever the dataset's file holds."""
    for ev_key in ('val_evaluator', 'test_evaluator'):
        if (ev_key == 'val_evaluator') != ('val_dataloader' in which):
            continue
        evs = cfg.get(ev_key)
        for ev in (evs if isinstance(evs, (list, tuple)) else [evs]):
            if not isinstance(ev, dict) or not ev.get('ann_file') or \
                    _is_remote(ev['ann_file']):
                continue
            ann = ev['ann_file']
            if not osp.isfile(ann):
                raise UsageError(f'{ev_key}: annotation file {ann} does not exist; {TOY_HINT}')
            if ann.endswith('.json') and 'Coco' in str(ev.get('type', '')) and \
                    osp.realpath(ann) not in parsed:
                _check_coco_json(ann, ev_key)
                parsed.add(osp.realpath(ann))


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


PICKLE_SUFFIXES = ('.pkl', '.pickle')


def check_out_path(out, task, overwrite=False):
    """``tools/test.py --out``, checked when the arguments are read rather than when the
    predictions are written, after the whole test: detection and classification dump a .pkl
    file, segmentation writes PNGs into a folder; either must be creatable, and what is there
    already is kept unless ``overwrite``."""
    if task == 'seg':
        _check_out_folder(out, overwrite)
    else:
        _check_out_file(out, overwrite)
    _check_out_writable(out)


def _check_out_file(out, overwrite):
    if osp.isdir(out):
        raise UsageError(f'--out {out} is a folder; detection and classification write their '
                         f'predictions to a .pkl file: give a file, e.g. '
                         f'{osp.join(out, "predictions.pkl")}')
    if not out.endswith(PICKLE_SUFFIXES):
        raise UsageError(f'--out {out}: for detection and classification --out must be a .pkl '
                         'file')
    if osp.exists(out) and not overwrite:
        raise UsageError(f'--out {out} already exists: pass --overwrite to replace it, or '
                         'another --out')


def _check_out_folder(out, overwrite):
    if osp.exists(out) and not osp.isdir(out):
        raise UsageError(f'--out {out} is a file; segmentation writes prediction PNGs into a '
                         'folder: give a folder')
    if out.endswith(PICKLE_SUFFIXES):
        raise UsageError(f'--out {out}: segmentation writes prediction PNGs into a folder, not '
                         'a .pkl file: give a folder')
    if osp.isdir(out) and os.listdir(out) and not overwrite:
        raise UsageError(f'--out folder {out} is not empty: its PNGs would be overwritten; '
                         'pass --overwrite, or another --out')


def _check_out_writable(out):
    """``out``, or the nearest existing folder above it (the tools make the missing ones), is
    something this process may write."""
    target = osp.abspath(out)
    there = target
    while not osp.exists(there):
        there = osp.dirname(there)
    if there != target and not osp.isdir(there):
        raise UsageError(f'--out {out} cannot be created: {there} is a file, not a folder')
    if not os.access(there, os.W_OK | (os.X_OK if osp.isdir(there) else 0)):
        raise UsageError(f'--out {out}: no permission to write {there}')
