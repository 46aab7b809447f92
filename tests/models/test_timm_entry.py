"""timm entry points: ``import mmelsa`` registers ELSA-Swin-T/S/B and ELSA-VOLO-D1..D5 as timm
classifiers (images -> logits), with pretrained_cfgs naming the official files."""
import subprocess
import sys

import pytest
import torch

timm = pytest.importorskip('timm')
import mmelsa  # noqa: E402,F401

SWIN = ['elsa_swin_tiny', 'elsa_swin_small', 'elsa_swin_base']
VOLO = [f'elsa_volo_d{i}' for i in range(1, 6)]


def test_listed():
    assert sorted(timm.list_models('*elsa*')) == sorted(SWIN + VOLO)
    assert set(SWIN) <= set(timm.list_models('elsa_swin*', pretrained=False))


def test_swin_classifier_forward_and_num_classes():
    model = timm.create_model('elsa_swin_tiny', num_classes=7).eval()
    assert isinstance(model, torch.nn.Module) and model.num_classes == 7
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 224, 224))
    assert logits.shape == (2, 7) and torch.isfinite(logits).all()
    # the official classifier's rule: a last-stage map smaller than the window is refused
    with pytest.raises(ValueError, match='smaller than the window'):
        model(torch.randn(1, 3, 64, 64))
    assert model.backbone_arch == 'tiny'
    n = sum(p.numel() for p in timm.create_model('elsa_swin_tiny').parameters())
    assert abs(n / 1e6 - 29.1) < 0.3, n  # the metafile's 29.1M (paper: 29M)


def test_swin_layout_is_the_official_classifiers():
    """Backbone keys at top level, final ``norm`` and ``head``: an official ImageNet file
    (attn_mask buffers and all) loads through pretrained_cfg_overlay=dict(file=...)."""
    model = timm.create_model('elsa_swin_tiny')
    keys = set(model.state_dict())
    assert {'norm.weight', 'head.weight', 'patch_embed.proj.weight'} <= keys
    assert not any(k.startswith(('norm0', 'norm3', 'backbone.')) for k in keys)


def test_official_file_loads_strictly(tmp_path):
    ref = timm.create_model('elsa_swin_tiny', drop_path_rate=0.)
    sd = {k: torch.randn_like(v) if v.is_floating_point() else v
          for k, v in ref.state_dict().items()}
    sd['layers.0.blocks.1.attn_mask'] = torch.zeros(64, 49, 49)
    path = tmp_path / 'elsa_swin_tiny.pth'
    torch.save({'model': sd}, str(path))
    model = timm.create_model('elsa_swin_tiny', pretrained=True,
                              pretrained_cfg_overlay=dict(file=str(path)))
    for k, v in model.state_dict().items():
        assert torch.equal(v, sd[k]), k
    # another number of classes: the head is left out, the rest loads
    model = timm.create_model('elsa_swin_tiny', pretrained=True, num_classes=3,
                              pretrained_cfg_overlay=dict(file=str(path)))
    assert torch.equal(model.norm.weight, sd['norm.weight'])


def test_pretrained_without_a_file_is_a_one_line_error():
    res = subprocess.run([sys.executable, '-c',
                          'import mmelsa, timm\n'
                          'try:\n'
                          '    timm.create_model("elsa_swin_tiny", pretrained=True)\n'
                          'except RuntimeError as e:\n'
                          '    print("ERR", e)\n'], capture_output=True, text=True, timeout=300)
    line = [ln for ln in res.stdout.splitlines() if ln.startswith('ERR ')]
    assert len(line) == 1, res.stdout + res.stderr[-2000:]
    assert 'no downloadable weights' in line[0] and 'pretrained_cfg_overlay' in line[0]
    cfg = timm.models.get_pretrained_cfg('elsa_swin_tiny')
    assert cfg.url in ('', None) and 'pan.baidu.com' in (cfg.source or '')


def test_volo_classifier():
    model = timm.create_model('elsa_volo_d1', num_classes=5, img_size=64).eval()
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 64, 64))
    assert logits.shape == (1, 5)


def test_a_broken_timm_costs_one_warning_not_the_import():
    res = subprocess.run([sys.executable, '-W', 'always', '-c',
                          'import sys\n'
                          'sys.modules["torchvision"] = None  # timm cannot import\n'
                          'import mmelsa\n'
                          'from mmengine.registry import MODELS\n'
                          'assert MODELS.get("ELSASwinTransformer") is not None\n'],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    lines = [ln for ln in res.stderr.splitlines() if 'registration failed' in ln]
    assert len(lines) == 1 and 'timm' in lines[0], res.stderr[-2000:]
