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
    full = {(B, C, H, W), (B, H, W, C), (B * H * W, C), (B, G, K * K, H, W),
            (B, H, W, G, K * K), (B, G * K * K, H, W)}
    assert not [s for s in shapes if s in full], shapes
    # what is left: q and k made dense for torch.export (2/3 of C each), and small tables
    assert all(s[1] == m.dim_qk or s[0] * s[1] <= C * K * K for s in shapes
               if len(s) >= 2), shapes

