"""What a person looks at after ``tools/run_toy.sh``: pictures, curves, per-class figures and
the final summary table of the toy runs.

    # one task, after its training and its ``tools/test.py ... --out PRED``
    python tools/analysis_tools/toy_report.py det WORK_DIR --data DATA_DIR/toy_coco --pred PRED.pkl
    python tools/analysis_tools/toy_report.py seg WORK_DIR --data DATA_DIR/toy_ade --pred PRED_DIR
    python tools/analysis_tools/toy_report.py cls WORK_DIR --data DATA_DIR/toy_cls --pred PRED.pkl
    # the table over the tasks' reports (and the wall time of each part of the run)
    python tools/analysis_tools/toy_report.py table WORK_DIR/det WORK_DIR/seg --times TIMES

A task report writes into WORK_DIR:

* ``vis/<image>.png``: every validation image, ground truth and prediction side by side,
  upscaled so the labels can be read; predictions below ``--score-thr`` are not drawn;
* ``overview.png``: a grid of the first ``--num-overview`` of those pictures;
* ``curves.png``: the training loss and the validation metric over the run (from the training
  run's ``vis_data/scalars.json``; the point at iteration 0 is the untrained model, evaluated
  by ``ValidateBeforeTrainHook``);
* ``summary.json``: the metrics, computed here from the saved predictions (COCO AP per class
  with pycocotools; IoU per class from the label maps; top-1 accuracy per class from the
  predicted labels), and the untrained model's.

The metrics are computed from the predictions independently of the test tool's evaluator, so
the per-class figures come with their totals (the test tool's are printed next to them).
"""
import argparse
import glob
import json
import os
import os.path as osp
import sys

import numpy as np

HEADLINE = dict(det=('coco/bbox_mAP', 'coco/segm_mAP'), seg=('mIoU', ),
                cls=('accuracy/top1', ))


def _cv2():
    import cv2
    return cv2


# ----------------------------------------------------------------------------- drawing
def _text(img, xy, text, colour, scale=0.5):
    """Label with a dark box behind it, readable on any background."""
    cv2 = _cv2()
    font = cv2.FONT_HERSHEY_SIMPLEX
    (tw, th), base = cv2.getTextSize(text, font, scale, 1)
    x = int(min(max(xy[0], 0), img.shape[1] - tw - 2))
    y = int(min(max(xy[1], th + 3), img.shape[0] - 2))
    cv2.rectangle(img, (x, y - th - 3), (x + tw + 2, y + base - 1), (0, 0, 0), -1)
    cv2.putText(img, text, (x + 1, y - 1), font, scale, colour, 1, cv2.LINE_AA)


def _panel(img, title, scale):
    """Upscaled copy of ``img`` (BGR) with a title bar."""
    cv2 = _cv2()
    big = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    bar = np.full((22, big.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, title, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return big, bar


def _side_by_side(panels, gap=6):
    h = max(p.shape[0] for p in panels)
    out = []
    for i, p in enumerate(panels):
        if i:
            out.append(np.full((h, gap, 3), 255, np.uint8))
        out.append(np.pad(p, ((0, h - p.shape[0]), (0, 0), (0, 0)), constant_values=255))
    return np.concatenate(out, axis=1)


def _draw_instances(img, boxes, labels, masks, texts, palette, scale):
    """Masks tinted, boxes outlined and labelled, on an upscaled copy of ``img``."""
    cv2 = _cv2()
    big = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    for box, label, mask, text in zip(boxes, labels, masks, texts):
        colour = tuple(int(c) for c in palette[label][::-1])  # RGB palette -> BGR
        if mask is not None:
            m = cv2.resize(mask.astype(np.uint8), (big.shape[1], big.shape[0]),
                           interpolation=cv2.INTER_NEAREST).astype(bool)
            big[m] = (0.5 * big[m] + 0.5 * np.array(colour)).astype(np.uint8)
        x0, y0, x1, y1 = (np.asarray(box) * scale).round().astype(int)
        cv2.rectangle(big, (x0, y0), (x1, y1), colour, 2)
        _text(big, (x0, y0 - 2), text, (255, 255, 255))
    return big


def _titled(big, title):
    cv2 = _cv2()
    bar = np.full((22, big.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, title, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([bar, big], axis=0)


def overview(pictures, out_file, columns=2, gap=10):
    """A grid of equally sized pictures (rows filled left to right)."""
    cv2 = _cv2()
    h = max(p.shape[0] for p in pictures)
    w = max(p.shape[1] for p in pictures)
    rows = []
    for r in range(0, len(pictures), columns):
        cells = [np.pad(p, ((0, h - p.shape[0]), (0, w - p.shape[1]), (0, 0)),
                        constant_values=255) for p in pictures[r:r + columns]]
        cells += [np.full((h, w, 3), 255, np.uint8)] * (columns - len(cells))
        rows.append(_side_by_side(cells, gap))
    grid = rows[0]
    for row in rows[1:]:
        grid = np.concatenate([grid, np.full((gap, grid.shape[1], 3), 255, np.uint8), row])
    cv2.imwrite(out_file, grid)
    return out_file


# ----------------------------------------------------------------------------- detection
def _tensor_from_bytes(data):
    """What ``torch.storage._load_from_bytes`` does, without its ``weights_only=False``."""
    import io

    import torch
    return torch.load(io.BytesIO(data), weights_only=True)


def _safe_unpickle(path):
    """Unpickle mmdet's DumpDetResults file, allowing only what it holds: dicts, lists,
    numbers, strings and CPU tensors. Any other global (os.system, eval, ...) is refused with
    the file and the global named, so a foreign or doctored file cannot run code."""
    import codecs
    import collections
    import pickle

    import torch

    allowed = {
        ('collections', 'OrderedDict'): collections.OrderedDict,
        ('_codecs', 'encode'): codecs.encode,
        ('torch._utils', '_rebuild_tensor_v2'): torch._utils._rebuild_tensor_v2,
        ('torch.storage', '_load_from_bytes'): _tensor_from_bytes,
    }

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) not in allowed:
                raise pickle.UnpicklingError(
                    f'{path}: refused to load {module}.{name}: a predictions file from '
                    'tools/test.py --out holds only containers, numbers and tensors')
            return allowed[module, name]

    with open(path, 'rb') as f:
        return Unpickler(f).load()


def _load_det_predictions(pred_file):
    """tools/test.py --out FILE.pkl (mmdet's DumpDetResults): one dict per image, read with a
    restricted unpickler (:func:`_safe_unpickle`)."""
    results = _safe_unpickle(pred_file)
    out = {}
    for r in results:
        p = r['pred_instances']
        out[int(r['img_id'])] = dict(
            bboxes=np.asarray(p['bboxes'], np.float64).reshape(-1, 4),
            scores=np.asarray(p['scores'], np.float64).reshape(-1),
            labels=np.asarray(p['labels'], np.int64).reshape(-1),
            masks=list(p.get('masks', [])))
    return out


def coco_per_class(gt_file, preds):
    """bbox and segm AP (COCO's AP@[.5:.95], all areas, 100 detections), overall and per class,
    with pycocotools, from predictions as :func:`_load_det_predictions` returns them."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(gt_file)
    cat_ids = sorted(gt.getCatIds())
    names = [gt.loadCats(c)[0]['name'] for c in cat_ids]
    result = {}
    for iou_type in ('bbox', 'segm'):
        dets = []
        for img_id, p in preds.items():
            for i in range(len(p['scores'])):
                x0, y0, x1, y1 = p['bboxes'][i]
                d = dict(image_id=img_id, category_id=cat_ids[p['labels'][i]],
                         score=float(p['scores'][i]))
                if iou_type == 'bbox':
                    d['bbox'] = [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]
                else:
                    rle = dict(p['masks'][i])
                    if isinstance(rle['counts'], bytes):
                        rle['counts'] = rle['counts'].decode()
                    d['segmentation'] = rle
                dets.append(d)
        if not dets:  # nothing predicted: every AP is 0
            result[iou_type] = dict(mAP=0.0, per_class={n: 0.0 for n in names})
            continue
        with contextlib.redirect_stdout(io.StringIO()):
            ev = COCOeval(gt, gt.loadRes(dets), iou_type)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        # precision: [IoU thresholds, recall points, classes, area ranges, max dets]; -1 marks
        # "no ground truth", which the toy val set always has for every class.
        prec = ev.eval['precision'][:, :, :, 0, -1]
        per_class = {}
        for k, n in enumerate(names):
            p = prec[:, :, k]
            per_class[n] = float(p[p > -1].mean()) if (p > -1).any() else float('nan')
        result[iou_type] = dict(mAP=float(ev.stats[0]), per_class=per_class)
    return result


def report_det(args):
    import pycocotools.mask as mask_util
    cv2 = _cv2()
    gt_file = osp.join(args.data, 'annotations', 'instances_val.json')
    with open(gt_file) as f:
        coco = json.load(f)
    names = [c['name'] for c in sorted(coco['categories'], key=lambda c: c['id'])]
    cat_index = {c['id']: i for i, c in enumerate(sorted(coco['categories'],
                                                         key=lambda c: c['id']))}
    palette = args.palette
    preds = _load_det_predictions(args.pred)
    metrics = coco_per_class(gt_file, preds)

    vis_dir = osp.join(args.work_dir, 'vis')
    os.makedirs(vis_dir, exist_ok=True)
    pictures = []
    for im in sorted(coco['images'], key=lambda im: im['id']):
        img = cv2.imread(osp.join(args.data, 'val', im['file_name']))
        h, w = img.shape[:2]
        anns = [a for a in coco['annotations'] if a['image_id'] == im['id']]
        gt_masks = []
        for a in anns:
            rles = mask_util.frPyObjects(a['segmentation'], h, w)
            gt_masks.append(mask_util.decode(mask_util.merge(rles)))
        gt_boxes = [[a['bbox'][0], a['bbox'][1], a['bbox'][0] + a['bbox'][2],
                     a['bbox'][1] + a['bbox'][3]] for a in anns]
        gt_labels = [cat_index[a['category_id']] for a in anns]
        left = _draw_instances(img, gt_boxes, gt_labels, gt_masks,
                               [names[k] for k in gt_labels], palette, args.scale)
        p = preds.get(im['id'], dict(scores=np.zeros(0), bboxes=[], labels=[], masks=[]))
        keep = [i for i in np.argsort(-p['scores']) if p['scores'][i] >= args.score_thr]
        masks = [mask_util.decode(p['masks'][i]) if p['masks'] else None for i in keep]
        right = _draw_instances(img, [p['bboxes'][i] for i in keep],
                                [p['labels'][i] for i in keep], masks,
                                [f'{names[p["labels"][i]]} {p["scores"][i]:.2f}' for i in keep],
                                palette, args.scale)
        pic = _side_by_side([_titled(left, f'{im["file_name"]}: ground truth'),
                             _titled(right, f'prediction (score >= {args.score_thr:g})')])
        cv2.imwrite(osp.join(vis_dir, osp.splitext(im['file_name'])[0] + '.png'), pic)
        pictures.append(pic)
    values = {'coco/bbox_mAP': metrics['bbox']['mAP'], 'coco/segm_mAP': metrics['segm']['mAP']}
    per_class = {f'{t}_AP': metrics[t]['per_class'] for t in ('bbox', 'segm')}
    return values, per_class, pictures


# ----------------------------------------------------------------------------- segmentation
def seg_iou(gt_files, pred_files, num_classes):
    """IoU per class and overall pixel accuracy as mmseg's IoUMetric computes them for
    ``reduce_zero_label`` data: label value k is class k - 1, and 0 (unlabelled) is ignored."""
    cv2 = _cv2()
    inter = np.zeros(num_classes)
    union = np.zeros(num_classes)
    correct = total = 0
    for g, p in zip(gt_files, pred_files):
        gt = cv2.imread(g, cv2.IMREAD_UNCHANGED).astype(np.int64) - 1
        pred = cv2.imread(p, cv2.IMREAD_UNCHANGED).astype(np.int64) - 1
        valid = gt >= 0
        gt, pred = gt[valid], pred[valid]
        hist = np.bincount(gt * num_classes + pred, minlength=num_classes ** 2).reshape(
            num_classes, num_classes)
        inter += np.diag(hist)
        union += hist.sum(0) + hist.sum(1) - np.diag(hist)
        correct += int(np.diag(hist).sum())
        total += int(valid.sum())
    with np.errstate(invalid='ignore', divide='ignore'):
        iou = inter / union
    return 100 * iou, 100 * correct / max(total, 1)


def _colour_labels(label, palette):
    """Label map (values 1..N, 0 unlabelled) as a BGR picture; unlabelled is black."""
    lut = np.zeros((256, 3), np.uint8)
    for k, rgb in enumerate(palette):
        lut[k + 1] = rgb[::-1]
    return lut[label]


def report_seg(args):
    cv2 = _cv2()
    names = args.classes
    img_dir = osp.join(args.data, 'images', 'validation')
    ann_dir = osp.join(args.data, 'annotations', 'validation')
    stems = sorted(osp.splitext(f)[0] for f in os.listdir(img_dir) if f.endswith('.jpg'))
    missing = [s for s in stems if not osp.isfile(osp.join(args.pred, s + '.png'))]
    if missing:
        sys.exit(f'toy_report: no prediction for {len(missing)} validation images in '
                 f'{args.pred} (e.g. {missing[0]}.png): run tools/test.py with --out {args.pred}')
    iou, acc = seg_iou([osp.join(ann_dir, s + '.png') for s in stems],
                       [osp.join(args.pred, s + '.png') for s in stems], len(names))
    vis_dir = osp.join(args.work_dir, 'vis')
    os.makedirs(vis_dir, exist_ok=True)
    pictures = []
    for s in stems:
        img = cv2.imread(osp.join(img_dir, s + '.jpg'))
        gt = cv2.imread(osp.join(ann_dir, s + '.png'), cv2.IMREAD_UNCHANGED)
        pred = cv2.imread(osp.join(args.pred, s + '.png'), cv2.IMREAD_UNCHANGED)
        panels = []
        for title, label in (('image', None), ('ground truth', gt), ('prediction', pred)):
            pic = img if label is None else (
                0.35 * img + 0.65 * _colour_labels(label, args.palette)).astype(np.uint8)
            big = cv2.resize(pic, None, fx=args.scale, fy=args.scale,
                             interpolation=cv2.INTER_NEAREST)
            if label is not None:  # name every sizeable region at its innermost pixel
                for k in np.unique(label):
                    if k == 0:
                        continue
                    n, comp, stats, _ = cv2.connectedComponentsWithStats(
                        (label == k).astype(np.uint8))
                    for j in range(1, n):
                        if stats[j, cv2.CC_STAT_AREA] < 80:
                            continue
                        # the pixel farthest from the region's border: inside it even when
                        # the region is not convex (a wall around shapes)
                        # (padded: the image border counts as the region's border too)
                        region = np.pad((comp == j).astype(np.uint8), 1)
                        dist = cv2.distanceTransform(region, cv2.DIST_L2, 3)[1:-1, 1:-1]
                        cy, cx = np.unravel_index(np.argmax(dist), dist.shape)
                        _text(big, ((cx - 6) * args.scale, (cy + 2) * args.scale), names[k - 1],
                              (255, 255, 255), 0.45)
            panels.append(_titled(big, f'{s}: {title}' if label is None else title))
        pic = _side_by_side(panels)
        cv2.imwrite(osp.join(vis_dir, s + '.png'), pic)
        pictures.append(pic)
    values = {'mIoU': float(np.nanmean(iou)), 'aAcc': float(acc)}
    per_class = {'IoU': {n: float(v) for n, v in zip(names, iou)}}
    return values, per_class, pictures


# ----------------------------------------------------------------------------- classification
def _load_cls_predictions(pred_file):
    """tools/test.py --out FILE.pkl of a classifier (mmengine's DumpResults of mmpretrain's
    data samples): {image file name: (predicted label, its score)}."""
    out = {}
    for r in _safe_unpickle(pred_file):
        label = int(np.asarray(r['pred_label']).reshape(-1)[0])
        score = float(np.asarray(r['pred_score'], np.float64).reshape(-1)[label])
        out[osp.basename(r['img_path'])] = (label, score)
    return out


def report_cls(args):
    cv2 = _cv2()
    names = args.classes
    with open(osp.join(args.data, 'meta', 'val.txt')) as f:
        truth = [(name, int(k)) for name, k in (line.split() for line in f if line.strip())]
    preds = _load_cls_predictions(args.pred)
    missing = [name for name, _ in truth if name not in preds]
    if missing:
        sys.exit(f'toy_report: no prediction for {len(missing)} validation images in '
                 f'{args.pred} (e.g. {missing[0]}): run tools/test.py with --out {args.pred}')
    right = np.array([preds[name][0] == k for name, k in truth])
    labels = np.array([k for _, k in truth])
    per_class = {'accuracy': {n: float(100 * right[labels == i].mean())
                              for i, n in enumerate(names) if (labels == i).any()}}
    vis_dir = osp.join(args.work_dir, 'vis')
    os.makedirs(vis_dir, exist_ok=True)
    pictures = []
    for name, k in truth:
        img = cv2.imread(osp.join(args.data, 'val', name))
        big = cv2.resize(img, None, fx=args.scale, fy=args.scale,
                         interpolation=cv2.INTER_NEAREST)
        label, score = preds[name]
        colour = (0, 200, 0) if label == k else (0, 0, 255)
        _text(big, (4, big.shape[0] - 8), f'{names[label]} {score:.2f}', colour)
        pic = _titled(big, f'{name}: {names[k]}')
        cv2.imwrite(osp.join(vis_dir, osp.splitext(name)[0] + '.png'), pic)
        pictures.append(pic)
    return {'accuracy/top1': float(100 * right.mean())}, per_class, pictures


# ----------------------------------------------------------------------------- curves
def read_scalars(work_dir):
    """Training and validation scalars of the newest training run under ``work_dir``
    (mmengine's LocalVisBackend: ``<work_dir>/<timestamp>/vis_data/scalars.json``)."""
    runs = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    for path in reversed(runs):
        with open(path) as f:
            rows = [json.loads(line) for line in f if line.strip()]
        if any('loss' in r for r in rows):
            return rows, path
    raise FileNotFoundError(f'no training run (vis_data/scalars.json with a loss) under '
                            f'{work_dir}')


def plot_curves(rows, keys, out_file, title):
    import matplotlib
    matplotlib.use('Agg')  # no display needed
    import matplotlib.pyplot as plt
    train = [r for r in rows if 'loss' in r]
    val = [r for r in rows if any(k in r for k in keys)]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax1.plot([r['step'] for r in train], [r['loss'] for r in train], color='tab:blue')
    ax1.set_xlabel('iteration')
    ax1.set_ylabel('training loss (sum of the terms)')
    ax1.set_yscale('log')
    ax1.grid(alpha=0.3)
    for k in keys:
        pts = [(r['step'], r[k]) for r in val if k in r]
        ax2.plot([s for s, _ in pts], [v for _, v in pts], 'o-', label=k)
    ax2.set_xlabel('iteration (0: the untrained model)')
    ax2.set_ylabel('validation metric')
    ax2.grid(alpha=0.3)
    ax2.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out_file, dpi=90)
    plt.close(fig)
    return out_file


def report(args):
    task = args.task
    values, per_class, pictures = dict(det=report_det, seg=report_seg, cls=report_cls)[task](args)
    rows, scalars = read_scalars(args.work_dir)
    keys = HEADLINE[task]
    val_rows = [r for r in rows if any(k in r for k in keys)]
    untrained = {k: r[k] for r in val_rows if r['step'] == 0 for k in keys if k in r}
    last_step = max(r['step'] for r in rows)  # the last validation is at the last iteration
    curves = plot_curves(rows, keys, osp.join(args.work_dir, 'curves.png'),
                         f'toy {task}: {osp.basename(args.config or task)}')
    over = overview(pictures[:args.num_overview], osp.join(args.work_dir, 'overview.png'))
    # The untrained model's validation reports the headline metrics on mmdet's / mmseg's /
    # mmpretrain's scale; ours are 0-1 (COCO AP) and 0-100 (IoU, accuracy) as well.
    summary = dict(task=task, metrics=values, untrained=untrained, per_class=per_class,
                   iterations=last_step, test_tool_metrics=args.test_metrics,
                   curves=curves, overview=over, pictures=osp.join(args.work_dir, 'vis'),
                   scalars=scalars)
    with open(osp.join(args.work_dir, 'summary.json'), 'w') as f:
        json.dump(summary, f, indent=1)
    for group, figures in per_class.items():
        print(f'{task} {group}: ' + ', '.join(f'{n} {v:.3g}' for n, v in figures.items()))
    print(f'{task}: curves -> {curves}; overview -> {over}')
    return summary


# ----------------------------------------------------------------------------- table
def table(args):
    times = {}
    if args.times and osp.isfile(args.times):
        with open(args.times) as f:
            for line in f:
                part, _, sec = line.strip().rpartition(' ')
                if part:
                    times[part] = times.get(part, 0) + int(sec)
    rows = [('task', 'metric', 'value', 'untrained', 'time')]
    for wd in args.task_dirs:
        with open(osp.join(wd, 'summary.json')) as f:
            s = json.load(f)
        # a run is named by its folder (run_toy.sh's task: two classifiers are both 'cls')
        name = osp.basename(osp.normpath(wd))
        t = sum(v for k, v in times.items() if k.split()[-1] == name)
        for k, v in s['metrics'].items():
            if k not in HEADLINE[s['task']]:
                continue
            fmt = '{:.3f}' if s['task'] == 'det' else '{:.1f}'
            u = s['untrained'].get(k)
            rows.append((name, k, fmt.format(v), '-' if u is None else fmt.format(u),
                         f'{t} s'))
        for group, figures in s['per_class'].items():
            fmt = '{:.2f}' if s['task'] == 'det' else '{:.1f}'
            rows.append((name, group, ' '.join(f'{n} ' + fmt.format(v)
                                               for n, v in figures.items()), '', ''))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ['  '.join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, '  '.join('-' * w for w in widths))
    print('\n'.join(lines))
    if times:
        print('wall time per part: ' + ', '.join(f'{k} {v} s' for k, v in times.items()))
    for wd in args.task_dirs:
        with open(osp.join(wd, 'summary.json')) as f:
            s = json.load(f)
        print(f'{osp.basename(osp.normpath(wd))}: overview {s["overview"]}, '
              f'curves {s["curves"]}, '
              f'all pictures {s["pictures"]}/')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Pictures, curves and the summary of the toy runs')
    sub = p.add_subparsers(dest='task', required=True)
    for task in ('det', 'seg', 'cls'):
        q = sub.add_parser(task, help=f'report of the toy {task} run')
        q.add_argument('work_dir', help='the training and test work dir')
        q.add_argument('--data', required=True, help='toy_coco / toy_ade / toy_cls folder')
        q.add_argument('--pred', required=True, help='tools/test.py --out of the val set')
        q.add_argument('--config', help='the config (named in the plot title)')
        q.add_argument('--test-metrics', type=json.loads, default=None,
                       help="the test tool's metrics (JSON), stored next to ours")
        q.add_argument('--score-thr', type=float, default=0.5,
                       help='draw predictions with at least this score (det)')
        q.add_argument('--scale', type=int, default=3, help='upscaling of the pictures')
        q.add_argument('--num-overview', type=int, default=6)
    q = sub.add_parser('table', help='the final table over task reports')
    q.add_argument('task_dirs', nargs='+')
    q.add_argument('--times', help='file of "<part> <seconds>" lines')
    args = p.parse_args(argv)
    if args.task in ('det', 'seg', 'cls'):
        from mmelsa.datasets import toy
        args.classes = dict(det=toy.DET_CLASSES, seg=toy.SEG_CLASSES,
                            cls=toy.CLS_CLASSES)[args.task]
        args.palette = toy.SEG_PALETTE if args.task == 'seg' else toy.DET_PALETTE
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.task == 'table':
        table(args)
    else:
        report(args)


if __name__ == '__main__':
    main()
