"""The band form of the ELSA operator for export: its neighbourhood sum as one batched MatMul.

ONNX Runtime runs a graph one node at a time over whole tensors, so the tap form of
:mod:`mmelsa.ops.onnx` (K*K Slice / Mul / Add nodes) streams the feature map K*K times and pays
a node's overhead for every tap. Where the attention is shared by a head's channels (no
multiplicative ghost, stride 1), the sum is a matrix product instead. Cut the output into
tiles of ``R x T`` pixels, tile (p, s) starting at row ``top = p*R`` and column ``left = s*T``
(the last row and the last column of tiles moved back to end at the map's edge); a tile's
K x K neighbourhoods lie in a window of ``Lr x Lc = (R + (K-1)d) x (T + (K-1)d)`` input
pixels, so for head g and the tile's pixel (r, j)::

    out[g, top + r, left + j, :] = sum_{u < Lr, l < Lc}  A[(r, j), (u, l)] * X[(u, l), :]

    X[(u, l), :] = x[g, top + u - pad, left + l - pad, :]            (one Gather)
    A[(r, j), (r + u*d, j + v*d)] = attn[g, (u, v), top + r, left + j], else 0

(A and X of tile (p, s) and head g).

``A`` is the attention placed on the window: its columns by a fixed 0/1 matrix
``E[j, v, l]`` (one MatMul per j over all tiles' and rows' taps, so a few large products
rather than a tiny one per pixel), its rows by one Gather that also puts them in the sum's
order. Then one MatMul (M = R*T, K = Lr*Lc, N = C/G) per tile and head does the sum. Against
the tap form this trades a few nodes for Lr*Lc / K^2 times the multiply-adds and an X of
Lr*Lc / (R*T) times x's size, both of which ONNX Runtime runs at its MatMul and Gather speeds.
At K = 7, R x T = 4 x 8 (2.9x the multiply-adds, X 4.4x x's size) ran the band sum of
ELSA-Swin-T's stages at 512 x 512 in 0.67-0.69x the time of 1 x 8 tiles (2x, 12.25x), whose
MatMuls are too small to run at speed, and 6-11% faster than 8 x 8 and 4 x 4
(docs/benchmarks.md, "ONNX Runtime: tiles").

The graph holds no shape arithmetic that an exporter could fix at the traced size: the zero
padding is gathered zero rows, and the tile counts and the index vectors are computed from
the input's shape in the graph (Range, Div, Mod, Where), so one export serves every batch,
height and width.

The form works on channels-last maps (:func:`elsa_band_form_channels_last`, which a model's
export calls with its MatMuls' outputs); :func:`elsa_band_form` takes the operator's NCHW
arguments and changes their layout first.
"""
import torch
import torch.nn.functional as F

__all__ = [
    'ROWS', 'COLUMNS', 'band_form_applies', 'elsa_band_form', 'elsa_band_form_channels_last',
    'additive_ghost_conv'
]

#: a tile's rows (R above) and columns (T above)
ROWS, COLUMNS = 4, 8


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
    K, d, R, T = kernel_size, dilation, ROWS, COLUMNS
    B, H, W, C = x.shape
    G, per_head = heads, C // heads
    pad = (K // 2) * d
    Lr, Lc = R + (K - 1) * d, T + (K - 1) * d
    P, S = (H + (R - 1)) // R, (W + (T - 1)) // T
    # Traced sizes: no tensor has the tile counts P or S alone as a dimension, and no reshape
    # splits or merges one, because torch.export then guards P == 1 or P != 1 and fixes the
    # size to the example's range. So the tiles are numbered by one Range over P * S * G, the
    # division by S * G goes through a tensor (the dynamo exporter cannot divide by a symbolic
    # Python number), the other indices are grids of Ranges over fixed sizes broadcast against
    # it, and comparisons and Where stand for min / max (int64 Min is not in ONNX before opset
    # 12). The indices are non-negative, so truncating division and fmod serve (one ONNX node
    # each, where floor division and remainder take several). Every rearrangement is one
    # Gather of rows (index_select), which puts the rows in the order the next node wants.
    N = P * S * G
    SG = torch.arange(S * G)[-1:] + 1
    tile = torch.arange(N)  # tile (p, s) of head g
    p, sg = _div(tile, SG), torch.fmod(tile, SG)
    s, g = _div(sg, G), torch.fmod(sg, G)
    ys, xs = torch.arange(H), torch.arange(W)
    top, left = _starts(p, R, ys), _starts(s, T, xs)
    # X[tile, (u, l)] = x[top + u - pad, left + l - pad, g], or the zero row after x's rows
    # (B, H * W * G + 1, C/G): (N, Lr Lc, C/G), Lr Lc / (R T) times x's size
    xz = F.pad(x.reshape(B, H * W * G, per_head), (0, 0, 0, 1))
    zero_row = torch.arange(H * W * G)[-1:] + 1
    rows = top.reshape(-1, 1, 1) + (torch.arange(Lr).reshape(Lr, 1) - pad)
    cols = left.reshape(-1, 1, 1) + (torch.arange(Lc) - pad)
    inside = (rows >= 0) & (rows < H) & (cols >= 0) & (cols < W)
    index = torch.where(inside, (rows * W + cols) * G + g.reshape(-1, 1, 1), zero_row)
    X = xz.index_select(1, index.reshape(-1)).reshape(B, N, Lr * Lc, per_head)
    # the attention, softmaxed over the taps, in rows (j, tile, r) for output pixel
    # (top + r, left + j) (clamped to the map where a map is smaller than one tile: those
    # sums are cut off below), and after them, as j = T, as many rows of any value
    a = attn.reshape(B, H * W * G, K * K)
    if attn_is_logits:
        a = a.softmax(-1)
    i = top.reshape(1, -1, 1) + torch.arange(R)  # (1, N, R)
    w = left.reshape(1, -1, 1) + torch.arange(T).reshape(T, 1, 1)  # (T, N, 1)
    i, w = torch.where(i < H, i, H - 1), torch.where(w < W, w, W - 1)
    index = (i * W + w) * G + g.reshape(1, -1, 1)
    index = torch.cat([index, index[:1]]).reshape(-1)
    a = a.index_select(1, index).reshape(B * (T + 1), N * R * K, K)
    # tap (u, v) of pixel (r, j) placed at (r + u*d, j + v*d) of the tile's Lr x Lc window:
    # columns by one MatMul per j with E[j] (rows (tile, r, u), all tiles at once; E[T] = 0
    # makes zero rows), rows by one Gather of those rows and zero rows. E is repeated for each
    # sample, not broadcast: torch.export fixes the batch size of an example of one where a
    # broadcast operand is reshaped.
    E = F.pad(_band_matrix(T, K, d, a.dtype), (0, 0, 0, 0, 0, 1))
    A = torch.bmm(a, E.repeat(B, 1, 1)).reshape(B, -1, Lc)
    # window row r + v of pixel (r, j) of a tile: its tap row u where v = u*d (u < K), else
    # a zero row of j = T (negative v fail the test, so truncation serves)
    v = torch.arange(Lr) - torch.arange(R).reshape(R, 1)  # (R, Lr)
    tap = (v >= 0) & (v < K * d) & (torch.fmod(v, d) == 0)
    row = torch.arange(R).reshape(R, 1) * K + _div(v, d)  # in the block of pixel (j, tile)
    tiles = torch.arange(N)[-1] + 1  # 0-d: its broadcast needs no guard
    block = (torch.arange(T).reshape(1, T, 1, 1) * tiles
             + torch.arange(N).reshape(-1, 1, 1, 1)) * (R * K)  # (N, T, 1, 1)
    index = torch.where(tap, block + row, T * tiles * (R * K))
    A = A.index_select(1, index.reshape(-1)).reshape(B, N, T * R, Lr * Lc)
    out = torch.matmul(A, X).reshape(B, N * T * R, per_head)
    # out[i, w, g] = out[(tile, j, r)] of the tile that holds it: p = i // R, s = w // T
    i, w = ys, xs
    p, s = _div(i, R), _div(w, T)
    index = ((p * SG * (T * R) + i - _starts(p, R, i)).reshape(-1, 1, 1)
             + ((s.reshape(-1, 1) * G + torch.arange(G)) * T
                + (w - _starts(s, T, w)).reshape(-1, 1)) * R)
    out = out.index_select(1, index.reshape(-1)).reshape(B, H, W, C)
    if ghost_add is not None:
        out = out + additive_ghost_conv(x.permute(0, 3, 1, 2), ghost_add, C, K, d,
                                        1).permute(0, 2, 3, 1)
    return out


def _div(n, m):
    """n // m for non-negative integers: one ONNX Div (floor division exports as several)."""
    return torch.div(n, m, rounding_mode='trunc')


def _starts(n, size, positions):
    """The first position of tile n (a tensor of tile numbers) of ``size`` positions over
    ``positions`` (an arange of the map's side): n * size, except for the last tile, moved back
    to end at the last position (to 0 if the side is shorter than a tile), so no position past
    the map is computed and the attention needs no padding to whole tiles."""
    last = positions[-1:] - (size - 1)
    last = torch.where(last > 0, last, torch.zeros_like(last))
    first = n * size
    return torch.where(first < last, first, last)
