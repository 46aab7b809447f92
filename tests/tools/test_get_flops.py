"""tools/analysis_tools/get_flops.py counts the ELSA operator, which plain tracers miss."""
import os.path as osp
import sys

import pytest

from .conftest import REPO, needs_stack

pytestmark = needs_stack
DET = osp.join(REPO, 'configs/toy/mask-rcnn_elsa-swin-toy_fpn_1xb4-8e_toy-coco.py')
SEG = osp.join(REPO, 'configs/toy/upernet_elsa-swin-toy_1xb8-800i_toy-ade-128x128.py')


def _tool():
    sys.path.insert(0, osp.join(REPO, 'tools', 'analysis_tools'))
    import get_flops
    return get_flops


def test_elsa_op_flops_match_the_calls(monkeypatch):
    """The operator column equals K*K*(1 + ghost) per output element summed over the actual
    calls of mmelsa.ops.elsa_attention (recorded here by wrapping the function)."""
    gf = _tool()
    import mmelsa.ops
    from mmelsa.cli import preflight
    from mmelsa.ops.flops import elsa_op_flops
    calls = []
    real = mmelsa.ops.elsa_attention

    def spy(x, attn, ghost_mul=None, ghost_add=None, kernel_size=7, dilation=1, stride=1,
            attn_is_logits=False):
        calls.append((tuple(x.shape), kernel_size, stride,
                      ghost_mul is not None or ghost_add is not None))
        return real(x, attn, ghost_mul, ghost_add, kernel_size, dilation, stride,
                    attn_is_logits)

    monkeypatch.setattr(mmelsa.ops, 'elsa_attention', spy)
    cfg = preflight.load_config(DET)
    res = gf.count(cfg, (128, 160), backbone_only=True)
    assert calls, 'the toy backbone has ELSA blocks'
    # One forward pass calls the operator once per ELSA block.
    n_elsa_blocks = sum(cfg.model.backbone.depths[:3])
    assert len(calls) % n_elsa_blocks == 0
    one_pass = calls[:n_elsa_blocks]
    expected = sum(elsa_op_flops(s, k, st, g) for s, k, st, g in one_pass)
    assert res['elsa_flops'] == expected > 0
    assert res['flops'] > res['elsa_flops']


@pytest.mark.slow
def test_table_for_toy_configs(capsys):
    gf = _tool()
    rows = gf.main([DET, SEG, '--shape', '128', '160'])
    out = capsys.readouterr().out
    assert 'of which ELSA op' in out and len(rows) == 2
    for row in rows:
        assert float(row[2]) > float(row[3]) > 0  # total params > backbone params
        assert float(row[4]) > float(row[5]) > 0


def test_mmengine_complexity_info_counts_the_elsa_op(recwarn, mmengine_messages):
    """mmengine's own entry point (what mmdet's get_flops.py calls) counts the operator,
    without an "unsupported operator" warning for it, and agrees with our tool."""
    from mmengine.analysis import get_model_complexity_info

    from mmelsa.cli import preflight
    from mmelsa.models import ELSASwinTransformer
    gf = _tool()
    cfg = preflight.load_config(DET)
    backbone_cfg = dict(cfg.model.backbone)
    backbone_cfg.pop('type')
    model = ELSASwinTransformer(**backbone_cfg).eval()
    info = get_model_complexity_info(model, input_shape=(3, 128, 160), show_table=False,
                                     show_arch=False)
    text = '\n'.join(mmengine_messages + [str(w.message) for w in recwarn])
    assert 'elsa_forward' not in text and 'elsa_softmax_forward' not in text, text
    ours = gf.count(cfg, (128, 160), backbone_only=True)
    assert info['flops'] == ours['flops'] and ours['elsa_flops'] > 0


def _readme_rows(folder):
    """{config name: (params in M, GFLOPs)} from a config README's results table."""
    import re
    with open(osp.join(REPO, 'configs', folder, 'README.md')) as f:
        text = f.read()
    header = next(ln for ln in text.splitlines() if ln.startswith('| config |'))
    cols = [c.strip() for c in header.strip('|').split('|')]
    rows = {}
    for ln in text.splitlines():
        m = re.match(r'\| \[([^\]]+)\]', ln)
        if m:
            cells = [c.strip() for c in ln.strip('|').split('|')]
            params = float(cells[cols.index('params')].rstrip('M'))
            gflops = float(cells[cols.index('GFLOPs')].split()[0])
            rows[m.group(1)] = (params, gflops)
    return rows


@pytest.mark.slow
@pytest.mark.parametrize('folder', ['elsa_swin', 'elsa_swin_seg'])
def test_config_readme_params_and_flops_are_the_tools(folder):
    """The params column of every row, and the GFLOPs of the first row, are what the tool
    counts now (the whole FLOP trace of every row would take ~15 min on 2 cores)."""
    gf = _tool()
    rows = _readme_rows(folder)
    assert len(rows) >= 2
    configs = [osp.join(REPO, 'configs', folder, name + '.py') for name in rows]
    counted = gf.main(configs + ['--params-only'])
    for (name, (params, _)), row in zip(rows.items(), counted):
        assert row[0] == name and round(float(row[2]), 1) == params, (name, row[2])
    first = next(iter(rows))
    row = gf.main([configs[0]])[0]
    assert round(float(row[4]), 1) == rows[first][1], (first, row[4])
