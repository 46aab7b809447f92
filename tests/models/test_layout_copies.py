"""ELSAAttention makes no full-size layout copy of v, the attention map or the output, on
the CPU and (on a GPU) on CUDA, counted with torch.profiler (independent of timing)."""
import pytest
import torch

from mmelsa.models.elsa_attention import ELSAAttention

COPY_OPS = ('aten::copy_', 'aten::clone', 'aten::contiguous')


def copied_shapes(module, x):
    """Input shapes of every copy op (see COPY_OPS) run by one forward."""
    with torch.profiler.profile(record_shapes=True) as prof:
        module(x)
    # aten::addmm (the Linear layers) copies its broadcast bias into the output before the GEMM
    # accumulates into it: an initialisation, not a copy of a feature map, so it is left out.
    return [tuple(e.input_shapes[0]) for e in prof.events()
            if e.name in COPY_OPS and e.input_shapes and e.input_shapes[0]
            and not (e.cpu_parent is not None and e.cpu_parent.name == 'aten::addmm')]


@pytest.mark.parametrize('device', ['cpu', pytest.param('cuda', marks=pytest.mark.cuda)])
@pytest.mark.parametrize('train', [False, True], ids=['eval', 'train'])
def test_no_layout_copy_per_block(train, device):
    B, H, W, C, G, K = 2, 10, 12, 48, 3, 7
    # attn_drop = 0: the fused path; K = 7: on CUDA the tiled kernels, which take channels-last
    m = ELSAAttention(C, G, kernel_size=K).train(train).to(device)
    x = torch.randn(B, H, W, C, device=device)
    with torch.set_grad_enabled(train):
        m(x)  # warm-up (one-off work of the first call)
        shapes = copied_shapes(m, x)
    # no copy of any feature map (q and k are made dense only while traced): what is left are
    # the weights and ghost tables
    maps = [s for s in shapes if (H, W) in zip(s, s[1:]) or B * H * W in s]
    assert not maps, shapes

