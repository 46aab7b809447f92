"""Parameters and FLOPs of ELSA-Swin models, one table row per config.

    python tools/analysis_tools/get_flops.py CONFIG [CONFIG ...] [--shape H W]
                                             [--backbone-only] [--cfg-options k=v ...]

FLOPs are counted with mmengine's jit-tracing FlopAnalyzer (fvcore's convention: one fused
multiply-add = one FLOP). The tracer only knows aten operators, so it would silently skip the
ELSA aggregation (the custom operator ``mmelsa::elsa_forward`` that
``mmelsa.ops.elsa_attention`` dispatches to). We register a counting handle for it:

    per output element (B * C * Ho * Wo of them):  K*K multiply-adds (the weighted sum)
                                                  + K*K for the ghost head when present
                                                    (ghost_mul * attn + ghost_add per tap)

The same figure is printed in its own column so the operator's share is visible.

Default input: 800x1280 for detection (as the Swin/ELSA papers report), 512x2048 for
segmentation (ADE20K's test resolution). The whole model is traced through its ``_forward``
(backbone + neck + heads; for two-stage detectors with the test-time number of RPN
proposals); ``--backbone-only`` counts the backbone alone.
"""
import argparse
from collections import Counter
import os.path as osp
import sys

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
import _common  # noqa: E402

ELSA_OP = 'mmelsa::elsa_forward'
ELSA_KEY = 'elsa_attention'


def elsa_flop_handle(inputs, outputs):
    """FlopAnalyzer handle for ``mmelsa::elsa_forward``.

    Arguments of the operator: (x, attn, ghost_mul, ghost_add, kernel_size, dilation, stride).
    """
    from mmengine.analysis.jit_handles import get_shape
    out_shape = get_shape(outputs[0])
    attn_shape = get_shape(inputs[1])
    kk = attn_shape[2]  # attn is (B, G, K*K, Ho, Wo)
    elems = 1
    for s in out_shape:
        elems *= s
    has_ghost = any(v.type().kind() != 'NoneType' for v in inputs[2:4])
    # A Counter with our own key: a bare number would be filed under the op's name with the
    # namespace stripped ('elsa_forward'), which is easy to confuse.
    return Counter({ELSA_KEY: elems * kk * (2 if has_ghost else 1)})


def elsa_op_flops(x_shape, kernel_size, stride=1, ghost=True):
    """Closed form of the handle above, for callers that know the call's shapes."""
    b, c, h, w = x_shape
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    return b * c * ho * wo * kernel_size**2 * (2 if ghost else 1)


def build_model(cfg):
    task = _common.task_of(cfg)
    if task == 'det':
        from mmdet.registry import MODELS
        from mmdet.utils import register_all_modules
    else:
        from mmseg.registry import MODELS
        from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    from mmengine.model import revert_sync_batchnorm
    model = MODELS.build(cfg.model)
    return revert_sync_batchnorm(model).eval(), task


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
    analyzer.set_op_handle(ELSA_OP, elsa_flop_handle)
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
    p.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                   help='input size (default: det 800 1280, seg 512 2048)')
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
        _common.import_mmelsa()
        cfgs = [_common.load_config(c, args.cfg_options) for c in args.configs]
    except _common.UsageError as e:
        _common.fail(str(e))
    rows = []
    for path, cfg in zip(args.configs, cfgs):
        if cfg.model.get('backbone', {}).get('init_cfg'):
            cfg.model.backbone.init_cfg = None  # no checkpoint needed to count
        task = _common.task_of(cfg)
        shape = tuple(args.shape) if args.shape else ((800, 1280) if task == 'det' else
                                                      (512, 2048))
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
