"""ELSA-VOLO-D1..D5: VOLO (timm) with ELSA in its Outlooker blocks.

Parameter counts are pinned per variant next to VOLO's (timm's VOLO built the same way: without
classifier and token-labelling head); the Outlooker block is checked against the independent
float64 reference of the ELSA block; every variant trains a step through mmpretrain's
ImageClassifier on a tiny input; D1 exports to ONNX and runs in ONNX Runtime.
"""
import numpy as np
import pytest
import torch
from timm.models.volo import VOLO

from mmelsa.models.elsa_volo import ELSAVOLO
from tests.models.elsa_swin_reference import elsa_block_ref

ARCHS = ('d1', 'd2', 'd3', 'd4', 'd5')
# Backbone parameters (no classifier), computed once and pinned: ELSA-VOLO, and VOLO as timm
# builds it with num_classes=0. Tabled in configs/elsa_volo/README.md.
ELSA_VOLO_PARAMS = {
    'd1': 25_755_608,
    'd2': 57_361_168,
    'd3': 84_910_848,
    'd4': 190_401_824,
    'd5': 292_385_040,
}
VOLO_PARAMS = {
    'd1': 25_862_040,
    'd2': 57_652_336,
    'd3': 85_299_072,
    'd4': 191_423_520,
    'd5': 293_917_584,
}
# timm's VOLO with its 1000-class classifier and token-labelling head: VOLO's published sizes
# (26.6 / 58.7 / 86.3 / 193.0 / 295.5 M).
VOLO_IN1K_PARAMS = {
    'd1': 26_632_040,
    'd2': 58_678_336,
    'd3': 86_325_072,
    'd4': 192_961_520,
    'd5': 295_455_584,
}


def _count(module):
    return sum(p.numel() for p in module.parameters())


def test_registered_builder_makes_the_class():
    import mmelsa  # noqa: F401
    from mmpretrain.registry import MODELS
    with torch.device('meta'):
        model = MODELS.build(dict(type='ELSAVOLO', arch='d1'))
    assert isinstance(model, ELSAVOLO) and isinstance(model, VOLO)


@pytest.mark.parametrize('arch', ARCHS)
def test_parameter_counts(arch):
    with torch.device('meta'):  # shapes only: no memory, no initialisation cost
        model = ELSAVOLO(arch=arch)
        volo = VOLO(num_classes=0, use_aux_head=False, **ELSAVOLO.arch_zoo[arch])
        volo_in1k = VOLO(num_classes=1000, **ELSAVOLO.arch_zoo[arch])
    assert _count(model) == ELSA_VOLO_PARAMS[arch]
    assert _count(volo) == VOLO_PARAMS[arch]
    assert _count(volo_in1k) == VOLO_IN1K_PARAMS[arch]
    # Only the token mixers of the Outlooker stage differ.
    outlook = sum(_count(b.attn) for b in volo.network.modules()
                  if type(b).__name__ == 'Outlooker')
    elsa = sum(_count(b.attn) for b in model.outlooker_blocks())
    assert _count(volo) - outlook == _count(model) - elsa


def test_outlooker_block_matches_the_float64_reference():
    torch.manual_seed(0)
    model = ELSAVOLO(arch='d1', img_size=64).double().eval()
    block = model.outlooker_blocks()[1]
    with torch.no_grad():  # a non-zero ghost head and biases, so every term counts
        block.attn.ghost_head.normal_(0, 0.3)
        for m in block.modules():
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)) and m.bias is not None:
                m.bias.normal_(0, 0.2)
    sd = {'b.' + k: v for k, v in block.state_dict().items()}
    x = torch.randn(2, 9, 11, 192, dtype=torch.float64)
    with torch.no_grad():
        out = block(x)
    ref = elsa_block_ref(x, sd, 'b', num_heads=6, kernel_size=3)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)


def _classifier(arch, img_size):
    import mmelsa  # noqa: F401
    from mmpretrain.registry import MODELS
    channels = ELSAVOLO.arch_zoo[arch]['embed_dims'][-1]
    return MODELS.build(dict(
        type='ImageClassifier',
        backbone=dict(type='ELSAVOLO', arch=arch, img_size=img_size),
        head=dict(type='LinearClsHead', num_classes=5, in_channels=channels),
        data_preprocessor=dict(type='ClsDataPreprocessor', num_classes=5)))


@pytest.mark.parametrize('arch', ARCHS)
def test_a_training_step(arch):
    from mmengine.optim import OptimWrapper
    from mmpretrain.structures import DataSample
    torch.manual_seed(0)
    model = _classifier(arch, img_size=32).train()
    wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    data = dict(inputs=[torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
                        for _ in range(2)],
                data_samples=[DataSample().set_gt_label(i) for i in (1, 3)])
    ghost = model.backbone.outlooker_blocks()[0].attn.ghost_head
    before = ghost.detach().clone()
    losses = model.train_step(data, wrapper)
    assert torch.isfinite(losses['loss'])
    # plain SGD: the ghost head moved only if ELSA's gradient reached it
    assert not torch.equal(before, ghost.detach())


@pytest.mark.parametrize('dynamo', [True, False], ids=['dynamo', 'legacy'])
def test_d1_exports_to_onnx_and_runs_in_onnxruntime(tmp_path, dynamo):
    """A bare torch.onnx.export of the whole classifier (logits), no mmelsa argument."""
    import onnxruntime as ort

    class Logits(torch.nn.Module):

        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x):
            return self.model(x, mode='tensor')

    torch.manual_seed(0)
    module = Logits(_classifier('d1', img_size=64).eval()).eval()
    x = torch.randn(2, 3, 64, 64)
    path = str(tmp_path / 'elsa_volo_d1.onnx')
    torch.onnx.export(module, (x, ), path, dynamo=dynamo, opset_version=17, input_names=['x'],
                      output_names=['logits'])
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    x2 = torch.randn(2, 3, 64, 64)
    got = session.run(None, {'x': x2.numpy()})[0]
    with torch.no_grad():
        want = module(x2).numpy()
    assert got.shape == (2, 5)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
