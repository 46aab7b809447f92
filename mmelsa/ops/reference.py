"""Pure-PyTorch reference of the ELSA operator, shipped with the package (as NATTEN ships its
reference backend) so that tests, benchmarks and tools compare against one implementation.

It follows the definition in docs/elsa_facts.md (section 1) literally, through ``F.unfold``:
simple to read and independent of the native kernels, but it materialises a (B, C, K*K, Ho, Wo)
temporary, which is exactly what the kernels exist to avoid. Run it in float64 to get a
trustworthy reference.
"""
import torch
import torch.nn.functional as F


def elsa_reference(x, attn, ghost_mul=None, ghost_add=None, kernel_size=7, dilation=1,
                   stride=1):
    """out[b,c,i,j] = sum_{u,v} x[b,c,i*s+(u-K//2)*d, j*s+(v-K//2)*d]
    * (ghost_mul[c,u,v] * attn[b, c // (C/G), u*K+v, i, j] + ghost_add[c,u,v]),

    with ghost_mul[b,c,u,v] (ghost_add[b,c,u,v]) for a per-sample ghost (DDF's channel filter).

    Args:
        x: (B, C, H, W) values.
        attn: (B, G, K*K, Ho, Wo) attention, C % G == 0.
        ghost_mul, ghost_add: (C, K, K), (B, C, K, K) or None (ones / zeros).
    Returns:
        (B, C, Ho, Wo) with Ho = (H - 1) // stride + 1.
    """
    B, C, H, W = x.shape
    K, d, s = kernel_size, dilation, stride
    G = attn.shape[1]
    Ho, Wo = (H - 1) // s + 1, (W - 1) // s + 1
    cols = F.unfold(x, K, dilation=d, padding=(K // 2) * d, stride=s)
    cols = cols.view(B, C, K * K, Ho, Wo)
    a = attn.reshape(B, G, 1, K * K, Ho, Wo).expand(B, G, C // G, K * K, Ho, Wo)
    a = a.reshape(B, C, K * K, Ho, Wo)
    if ghost_mul is not None:
        a = a * ghost_mul.reshape(-1, C, K * K, 1, 1)
    if ghost_add is not None:
        a = a + ghost_add.reshape(-1, C, K * K, 1, 1)
    return (cols * a).sum(dim=2)


def max_rel_err(actual, expected):
    """max |a - e| / max(1, max |e|), in float64 on the CPU: a scale-aware error measure."""
    actual = actual.detach().to('cpu', torch.float64)
    expected = expected.detach().to('cpu', torch.float64)
    if expected.numel() == 0:
        return 0.0
    return ((actual - expected).abs().max() / expected.abs().max().clamp(min=1.0)).item()
