"""The band form of the ELSA operator for export: its neighbourhood sum as one batched MatMul.

ONNX Runtime runs a graph one node at a time over whole tensors, so the tap form of
:mod:`mmelsa.ops.onnx` (K*K Slice / Mul / Add nodes) streams the feature map K*K times and pays
a node's overhead for every tap. Where the attention is shared by a head's channels (no
multiplicative ghost, stride 1), the sum is a matrix product instead. Cut each row of the
output into segments of ``T`` pixels, segment s starting at column ``t = s*T`` (the last
one moved left to end at the last column); a segment's K x K neighbourhoods lie in K rows of
``L = T + (K - 1) * d`` input pixels, so for head g, output row i and segment s::

    out[g, i, t + j, :] = sum_{u < K, l < L}  A[g, i, s, j, (u, l)] * X[g, i, s, (u, l), :]

    X[g, i, s, (u, l), :] = xp[g, i + u*d, t + l, :]               (one Gather, channels last)
    A[g, i, s, j, (u, l)] = attn[g, (u, v), i, t + j]  where l = j + v*d, else 0

``A`` is the attention placed on the band ``l = j + v*d`` by a fixed 0/1 matrix ``E[j, v, l]``:
one MatMul per output row i and position j over all its segments' and heads' rows (u, v), so a
few large products rather than a tiny one per pixel, and a Gather that puts A's rows in the
sum's order. Then one MatMul (M = T, K = K*L, N = C/G) does the sum. Against the tap form this
trades a few nodes for (T + (K-1)d) / K times the multiply-adds and an X of K*L/T times x's
size, both of which ONNX Runtime runs at its MatMul and Gather speeds. T = 8 (2x the
multiply-adds at K = 7, X 12.25x x's size) ran the whole ELSA-Swin-T 0-2% faster than T = 16
(3x, 9.6x) at 224 x 224 and 512 x 512, and T = 12 slower than both (docs/benchmarks.md, "ONNX
Runtime: channels last").

The graph holds no shape arithmetic that an exporter could fix at the traced size: the zero
padding is one gathered zero row, and the segment count and the index vectors are computed from
the input's shape in the graph (Range, Div, Mod, Where), so one export serves every batch,
height and width.

The form works on channels-last maps (:func:`elsa_band_form_channels_last`, which a model's
export calls with its MatMuls' outputs); :func:`elsa_band_form` takes the operator's NCHW
arguments and changes their layout first.
"""
import torch
import torch.nn.functional as F

__all__ = [
    'SEGMENT', 'band_form_applies', 'elsa_band_form', 'elsa_band_form_channels_last',
    'additive_ghost_conv'
]

#: pixels per segment (T above)
SEGMENT = 8


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
    Returns (B, C, H, W), laid out channels last: :func:`elsa_band_form_channels_last` between
    two layout changes.
    """
    B, G, KK, H, W = attn.shape
    x = x.permute(0, 2, 3, 1)
    attn = attn.permute(0, 3, 4, 1, 2).reshape(B, H, W, G * KK)
    out = elsa_band_form_channels_last(x, attn, heads, ghost_add, kernel_size, dilation,
                                       attn_is_logits)
    return out.permute(0, 3, 1, 2)


def elsa_band_form_channels_last(x, attn, heads, ghost_add=None, kernel_size=7, dilation=1,
                                 attn_is_logits=False):
    """:func:`elsa_band_form` on channels-last maps, as a model exports them: x (B, H, W, C),
    attn (B, H, W, G*K*K) (head g's taps are channels [g*K*K, (g+1)*K*K)) -> (B, H, W, C).
    Channels last, the attention is the output of a MatMul, its softmax is over the last axis,
    and the result goes to the next MatMul without a transpose.
    """
    K, d, T = kernel_size, dilation, SEGMENT
    B, H, W, C = x.shape
    G, per_head = heads, C // heads
    pad = (K // 2) * d
    L = T + (K - 1) * d
    segments = (W + (T - 1)) // T
    # x: one row per pixel and head, and one zero row after them, which the bands' pixels
    # outside the map gather: (B, H * W * G + 1, C/G) (a copy of x, where padding the map
    # copied (H + 2 pad) (W + 2 pad + T) pixels)
    xz = F.pad(x.reshape(B, H * W * G, per_head), (0, 0, 0, 1))
    # Segment s covers output columns start_s .. start_s + T - 1 with start_s = s*T, except the
    # last, which is moved left to end at column W - 1 (to 0 if W < T): the attention needs no
    # zero padding to whole segments, and no column past W is computed when W >= T.
    # Every rearrangement is one Gather of rows (index_select: advanced indexing becomes
    # Transpose, Gather / GatherND, Transpose in the dynamo exporter's graph), which puts the
    # rows in the order the next MatMul wants: no Transpose node.
    # Traced sizes: no tensor has the segment count S alone as a dimension, and no reshape
    # splits or merges one, because torch.export then guards S == 1 or S != 1 and fixes the
    # width to the example's range. So each index is built from one Range over all its
    # entries, the reshapes go through (.., H * S * .., ..), and comparisons and Where stand
    # for min / max (int64 Min is not in ONNX before opset 12).
    columns = torch.arange(W)
    last = columns[-1:] - (T - 1)
    last = torch.where(last > 0, last, torch.zeros_like(last))

    def start(s):  # the first output column of segment s (a tensor of segment numbers)
        first = s * T
        return torch.where(first < last, first, last)

    # X[(i, s, g), (u, l)] = x[i + u*d - pad, start_s + l - pad, g], or the zero row
    q = torch.arange(segments * (G * K * L))
    s, q = q // (G * K * L), q % (G * K * L)
    g, q = q // (K * L), q % (K * L)
    rows = torch.arange(H).reshape(H, 1) + (q // L * d - pad)
    cols = start(s) + q % L - pad
    inside = (rows >= 0) & (rows < H) & (cols >= 0) & (cols < W)
    zero_row = torch.arange(H * W * G)[-1:] + 1
    index = torch.where(inside, (rows * W + cols) * G + g, zero_row)
    X = xz.index_select(1, index.reshape(-1)).reshape(B, H * segments * G, K * L, per_head)
    # the attention, softmaxed over the taps, in rows (i, j, s, g):
    # a[i, j, (s, g)] = attn[i, start_s + j, g] (past W, which only a map narrower than T has,
    # column W - 1: those sums are cut off below)
    a = attn.reshape(B, H * W * G, K * K)
    if attn_is_logits:
        a = a.softmax(-1)
    q = torch.arange(T * (segments * G))
    # S * G as a tensor: the dynamo exporter cannot divide by a symbolic Python number
    per_j = torch.arange(segments * G)[-1:] + 1
    j, q = q // per_j, q % per_j
    cols = start(q // G) + j
    cols = torch.where(cols < W, cols, columns[-1:])
    index = (torch.arange(H) * (W * G)).reshape(H, 1) + (cols * G + q % G)
    a = a.index_select(1, index.reshape(-1)).reshape(B, H * T * segments * G * K, K)
    # placed on the band, one matrix product per (i, j) over all its segments' and heads' rows
    # (a few large products, not one tiny one per pixel), then the rows put in the order
    # (i, s, g, j) of the sum by one Gather
    a = a.reshape(B, H, T, segments * G * K, K)
    A = torch.matmul(a, _band_matrix(T, K, d, a.dtype))
    A = A.reshape(B, H * T * segments * G, K * L)
    q = torch.arange(segments * G * T)
    sg, j = q // T, q % T
    index = (torch.arange(H) * (T * segments * G)).reshape(H, 1) + (j * (segments * G) + sg)
    A = A.index_select(1, index.reshape(-1)).reshape(B, H * segments * G, T, K * L)
    out = torch.matmul(A, X).reshape(B, H * segments * G * T, per_head)
    # out[i, w, g] = out[(i, s, g), w - start_s] with s = w // T
    q = torch.arange(W * G)
    w, g = q // G, q % G
    s = w // T
    index = (torch.arange(H) * (segments * G * T)).reshape(H, 1) + (
        (s * G + g) * T + w - start(s))
    out = out.index_select(1, index.reshape(-1)).reshape(B, H, W, C)
    if ghost_add is not None:
        out = out + additive_ghost_conv(x.permute(0, 3, 1, 2), ghost_add, C, K, d,
                                        1).permute(0, 2, 3, 1)
    return out
