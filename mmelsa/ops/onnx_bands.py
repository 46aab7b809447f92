"""The band form of the ELSA operator for export: its neighbourhood sum as one batched MatMul.

ONNX Runtime runs a graph one node at a time over whole tensors, so the tap form of
:mod:`mmelsa.ops.onnx` (K*K Slice / Mul / Add nodes) streams the feature map K*K times and pays
a node's overhead for every tap. Where the attention is shared by a head's channels (no
multiplicative ghost, stride 1), the sum is a matrix product instead. Cut each row of the
output into segments of ``T`` pixels; a segment's K x K neighbourhoods lie in K rows of
``L = T + (K - 1) * d`` input pixels, so for head g, output row i and segment s::

    out[g, i, s*T + j, :] = sum_{u < K, l < L}  A[g, i, s, j, (u, l)] * X[g, i, s, (u, l), :]

    X[g, i, s, (u, l), :] = xp[g, i + u*d, s*T + l, :]             (one Gather, channels last)
    A[g, i, s, j, (u, l)] = attn[g, (u, v), i, s*T + j]  where l = j + v*d, else 0

``A`` is the attention placed on the band ``l = j + v*d``: a batched MatMul of the attention
(j, u, v) with a fixed 0/1 matrix ``E[j, v, l]``. Then one MatMul (M = T, K = K*L, N = C/G)
does the sum. Against the tap form this trades a few nodes for (T + (K-1)d) / K times the
multiply-adds (2x at K = 7, T = 8) and an X of K*L/T times x's size, both of which ONNX
Runtime runs at its MatMul and Gather speeds. Measured on ELSA-Swin-T's stages (2 threads,
docs/benchmarks.md, "ONNX Runtime: the band form"): 0.3-0.45x the tap form's time. T = 16
(3x the multiply-adds, X 9.6x x's size) ran the whole ELSA-Swin-T 1-2% faster than T = 8 at
224 x 224 and 512 x 512; alone, one call at the first stage at 224 favoured 8 by 3%.

The graph holds no shape arithmetic that an exporter could fix at the traced size: the paddings
are constants, and the segment count and the index vectors are computed from the input's shape
in the graph (Range, Div, Mod), so one export serves every batch, height and width.
"""
import torch
import torch.nn.functional as F

__all__ = ['SEGMENT', 'band_form_applies', 'elsa_band_form', 'additive_ghost_conv']

#: pixels per segment (T above)
SEGMENT = 16


def band_form_applies(ghost_mul, ghost_add, stride):
    """Whether :func:`elsa_band_form` computes this call: the attention shared by a head's
    channels (no multiplicative ghost), stride 1, and no per-sample additive ghost."""
    return ghost_mul is None and stride == 1 and (ghost_add is None or ghost_add.dim() == 3)


def additive_ghost_conv(x, ghost_add, channels, kernel_size, dilation, stride):
    """The additive ghost's term, shared by both export forms: it does not depend on the
    attention, so it is one depth-wise convolution of x with ghost_add (C, K, K); ``channels``
    is C as a plain int."""
    pad = (kernel_size // 2) * dilation
    return F.conv2d(x, ghost_add.unsqueeze(1), stride=stride, padding=pad, dilation=dilation,
                    groups=channels)


def _band_matrix(T, K, d, dtype):
    """E[j, v, l] = 1 where l = j + v*d: (T, K, T + (K-1)d)."""
    L = T + (K - 1) * d
    target = torch.arange(T).reshape(T, 1, 1) + d * torch.arange(K).reshape(1, K, 1)
    return (torch.arange(L).reshape(1, 1, L) == target).to(dtype)


def elsa_band_form(x, attn, heads, ghost_add=None, kernel_size=7, dilation=1,
                   attn_is_logits=False):
    """The ELSA operator at stride 1 without a multiplicative ghost, as the module docstring
    writes it; same result as :func:`mmelsa.ops.elsa_attention` (inputs already validated).

    x (B, C, H, W), attn (B, G, K*K, H, W) (logits when ``attn_is_logits``), ghost_add
    (C, K, K) or None; ``heads`` is G as a plain int (the exporters trace ``attn.shape``).
    Returns (B, C, H, W), laid out channels last.
    """
    K, d, T = kernel_size, dilation, SEGMENT
    B, C, H, W = x.shape
    G, per_head = heads, C // heads
    pad = (K // 2) * d
    L = T + (K - 1) * d
    segments = (W + (T - 1)) // T
    # x: heads apart, channels last, then zero padding (the right side one segment wider, so
    # that the last segment's band is inside): (B, G, Hp * Wp, C/G). Padding after the
    # transpose pads whole pixels, which ONNX Runtime does faster than rows of a plane.
    width = W + (2 * pad + T)
    xp = x.reshape(B, G, per_head, H * W).transpose(2, 3).reshape(B, G, H, W, per_head)
    xp = F.pad(xp, (0, 0, pad, pad + T, pad, pad)).reshape(B, G, (H + 2 * pad) * width,
                                                            per_head)
    # Gathers are index_select: one Gather node from either exporter (advanced indexing
    # becomes Transpose, Gather / GatherND, Transpose in the dynamo exporter's graph).
    # Traced sizes: no tensor has the segment count S alone as a dimension, and no reshape
    # splits or merges one, because torch.export then guards S == 1 or S != 1 and fixes the
    # width to the example's range. So the index is built from one Range over (s, u, l), and
    # the reshapes below go through (.., H * S * T, ..).
    # index[i, (s, u, l)] = (i + u*d) * width + s*T + l
    q = torch.arange(segments * (K * L))
    s, q = q // (K * L), q % (K * L)
    index = (torch.arange(H) * width).reshape(H, 1) + (T * s + q // L * (d * width) + q % L)
    X = xp.index_select(2, index.reshape(-1)).reshape(B, G, H * segments, K * L, per_head)
    # the attention: taps last, softmaxed there, widened to whole segments with zeros (those
    # pixels' sums are cut off below)
    a = attn.permute(0, 1, 3, 4, 2)
    if attn_is_logits:
        a = a.softmax(-1)
    a = F.pad(a, (0, 0, 0, T)).index_select(3, torch.arange(segments * T))
    a = a.reshape(B, G, H * segments * T, K, K).reshape(B, G, H * segments, T, K, K)
    A = torch.matmul(a, _band_matrix(T, K, d, a.dtype)).reshape(B, G, H * segments, T, K * L)
    out = torch.matmul(A, X).reshape(B, G, H * segments * T, per_head)
    out = out.reshape(B, G, H, segments * T, per_head).index_select(3, torch.arange(W))
    out = out.permute(0, 2, 3, 1, 4).reshape(B, H, W, C).permute(0, 3, 1, 2)
    if ghost_add is not None:
        out = out + additive_ghost_conv(x, ghost_add, C, K, d, 1)
    return out
