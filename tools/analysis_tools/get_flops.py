"""Parameters and FLOPs of ELSA-Swin models, one table row per config.

    python tools/analysis_tools/get_flops.py CONFIG [CONFIG ...] [--shape H W]
                                             [--backbone-only] [--cfg-options k=v ...]

FLOPs are counted with mmengine's jit-tracing FlopAnalyzer (fvcore's convention: one fused
multiply-add = one FLOP). ``import mmelsa`` registers the ELSA operator's cost with it
(:mod:`mmelsa.ops.flops`), so mmengine's ``get_model_complexity_info`` and mmdet's own
``get_flops.py`` count it too; the
operator's share is printed in its own column.

Default input: 800x1280 for detection (as the Swin/ELSA papers report), 512x2048 for
segmentation (ADE20K's test resolution). The whole model is traced through its ``_forward``
(backbone + neck + heads; for two-stage detectors with the test-time number of RPN
proposals); ``--backbone-only`` counts the backbone alone.
"""
import argparse
import os.path as osp
import sys

import torch

from mmelsa import cli
from mmelsa.cli import preflight
from mmelsa.ops.flops import ELSA_KEY, ELSA_OP
from mmelsa.utils import toolboxes

#: input (H, W) counted when --shape is not given: the sizes papers report FLOPs at
DEFAULT_SHAPE = {'det': (800, 1280), 'seg': (512, 2048), 'cls': (224, 224)}


def build_model(cfg):
    from mmengine.model import revert_sync_batchnorm
    model = toolboxes.build_model(cfg)
    return revert_sync_batchnorm(model).eval(), toolboxes.task_of(cfg)


def fake_det_samples(h, w):
    from mmdet.structures import DetDataSample
    sample = DetDataSample(metainfo=dict(
        img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w), batch_input_shape=(h, w),
        scale_factor=(1.0, 1.0)))
    return [sample]


class _Forward(torch.nn.Module):
    """Exposes the part to analyse as a module with a tensor-only forward (what jit tracing
    needs); the wrapped model stays a submodule, so per-module breakdowns still work."""

    def __init__(self, model, task, backbone_only, shape):
        super().__init__()
        self.model = model
        self.task = task
        self.backbone_only = backbone_only
        self.shape = shape

    def forward(self, x):
        if self.backbone_only:
            return self.model.backbone(x)
        if self.task == 'det':
            return self.model._forward(x, fake_det_samples(*self.shape))
        if self.task == 'cls':
            return self.model(x, mode='tensor')  # the logits
        return self.model._forward(x)


def count(cfg, shape, backbone_only, flops=True):
    from mmengine.analysis import FlopAnalyzer, parameter_count
    model, task = build_model(cfg)
    params = parameter_count(model)
    if not flops:
        return dict(params=params[''], backbone_params=params.get('backbone', 0), flops=0,
                    elsa_flops=0, unsupported={})
    wrapper = _Forward(model, task, backbone_only, shape)
    x = torch.randn(1, 3, *shape)
    analyzer = FlopAnalyzer(wrapper, (x, ))
    analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    with torch.no_grad():
        total = analyzer.total()
        elsa = analyzer.by_operator().get(ELSA_KEY, 0)
    return dict(params=params[''], backbone_params=params.get('backbone', 0), flops=total,
                elsa_flops=elsa,
                unsupported=dict(analyzer.unsupported_ops()))


def _fmt(n, unit=1e9):
    return f'{n / unit:.3f}'


def parse_args(argv=None):
    from mmengine.config import DictAction
    p = argparse.ArgumentParser(description='Params and FLOPs (ELSA operator included)')
    p.add_argument('configs', nargs='+', help='config file(s)')
    p.add_argument('--shape', type=cli.positive_int, nargs=2, metavar=('H', 'W'),
                   help='input size (default: det 800 1280, seg 512 2048, cls 224 224)')
    p.add_argument('--backbone-only', action='store_true', help='count the backbone alone')
    p.add_argument('--params-only', action='store_true',
                   help='skip the (slow on CPU) FLOP trace, count parameters only')
    p.add_argument('--json', help='also write the rows to this JSON file')
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='override config settings for every config')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        cfgs = [preflight.load_config(c, args.cfg_options) for c in args.configs]
    except preflight.UsageError as e:
        cli.fail(str(e))
    rows = []
    for path, cfg in zip(args.configs, cfgs):
        if cfg.model.get('backbone', {}).get('init_cfg'):
            cfg.model.backbone.init_cfg = None  # no checkpoint needed to count
        task = toolboxes.task_of(cfg)
        shape = tuple(args.shape) if args.shape else DEFAULT_SHAPE[task]
        res = count(cfg, shape, args.backbone_only, flops=not args.params_only)
        rows.append((osp.splitext(osp.basename(path))[0], f'{shape[0]}x{shape[1]}',
                     _fmt(res['params'], 1e6), _fmt(res['backbone_params'], 1e6),
                     '-' if args.params_only else _fmt(res['flops']),
                     '-' if args.params_only else _fmt(res['elsa_flops'])))
        skipped = {k: v for k, v in res['unsupported'].items() if k != ELSA_OP}
        if skipped:
            print(f'note: {rows[-1][0]}: operators without a FLOP rule (not counted): '
                  + ', '.join(f'{k} x{v}' for k, v in sorted(skipped.items())),
                  file=sys.stderr)
    header = ('config', 'input', 'params (M)', 'backbone params (M)',
              'GFLOPs' + (' (backbone)' if args.backbone_only else ''), 'of which ELSA op')
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    line = '| ' + ' | '.join(str(h).ljust(w) for h, w in zip(header, widths)) + ' |'
    print(line)
    print('|' + '|'.join('-' * (w + 2) for w in widths) + '|')
    for r in rows:
        print('| ' + ' | '.join(str(c).ljust(w) for c, w in zip(r, widths)) + ' |')
    if args.json:
        import json
        with open(args.json, 'w') as f:
            json.dump({r[0]: dict(input=r[1], params=r[2], backbone_params=r[3], flops=r[4],
                                  elsa_flops=r[5]) for r in rows}, f, indent=1)
    return rows


if __name__ == '__main__':
    main()
