"""Swin Transformer (v1) layers, with the names and channel order of the official ELSA-Swin
checkpoints: patch embedding, patch merging, window attention with relative position bias, and
the (shifted) window block that ELSA-Swin keeps in its last stage.

Kept apart from the backbone (:mod:`.elsa_swin`) as mmpretrain keeps its window attention apart
from its Swin: these are plain Swin, nothing in them is ELSA. Every tensor is channels-last
(B, H, W, C), the layout the backbone passes between blocks. Window partition, its inverse and
the shift mask are computed from sizes that may be symbolic (torch.export, ONNX with dynamic
height and width), so none of them branches on a size.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.init import trunc_normal_

from .conv_stem import ConvStem
from .utils import DropPath, Mlp, build_norm


def ceil_div(n, d):
    """ceil(n / d) for an int or a symbolic size (torch.export), without a branch."""
    return (n + d - 1) // d


def round_up(n, d):
    """The smallest multiple of d that is >= n."""
    return ceil_div(n, d) * d


class PatchEmbed(nn.Module):
    """Non-overlapping patch embedding: pad right/bottom to a multiple of the patch size,
    ``proj`` (Conv2d, kernel = stride = patch size), then LayerNorm ``norm``.

    With ``conv_stem`` (a dict of :class:`~.conv_stem.ConvStem` arguments, ``{}`` for the
    scaled-ReLU stem's defaults), ``proj`` is that convolutional stem, reaching the same
    patch size; ``norm`` follows it as it follows the patchify convolution.

    Shape:
        - Input: (B, C_in, H, W)
        - Output: (B, ceil(H / p), ceil(W / p), embed_dims)
    """

    def __init__(self, in_channels=3, embed_dims=96, patch_size=4, norm_cfg=dict(type='LN'),
                 conv_stem=None):
        super().__init__()
        self.patch_size = patch_size
        if conv_stem is None:
            self.proj = nn.Conv2d(in_channels, embed_dims, patch_size, stride=patch_size)
        else:
            self.proj = ConvStem(in_channels, embed_dims, patch_size, **conv_stem)
        self.norm = build_norm(norm_cfg, embed_dims) if norm_cfg is not None else None

    def forward(self, x):
        H, W = x.shape[-2:]
        p = self.patch_size
        # Pad to p * ceil(H / p) unconditionally (a zero-width pad is a no-op). Written as a
        # rounded-up size rather than `if H % p`, so torch.export / ONNX keep H, W symbolic.
        x = F.pad(x, (0, round_up(W, p) - W, 0, round_up(H, p) - H))
        x = self.proj.forward_map(x) if isinstance(self.proj, ConvStem) else self.proj(x)
        x = x.permute(0, 2, 3, 1)
        if self.norm is not None:
            x = self.norm(x)
        return x


class PatchMerging(nn.Module):
    """2x2 patch merging: pad odd H/W by one at the bottom/right, concatenate
    ``[x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2], x[1::2, 1::2]]`` along channels, LayerNorm
    ``norm`` (4C), Linear ``reduction`` (4C -> 2C, no bias).

    Shape:
        - Input: (B, H, W, C)
        - Output: (B, ceil(H / 2), ceil(W / 2), 2C)
    """

    def __init__(self, dim, norm_cfg=dict(type='LN')):
        super().__init__()
        self.dim = dim
        # reduction before norm: the order of the official state dicts
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = build_norm(norm_cfg, 4 * dim) if norm_cfg is not None else None

    def forward(self, x):
        B, H, W, C = x.shape
        H2, W2 = ceil_div(H, 2), ceil_div(W, 2)
        x = F.pad(x, (0, 0, 0, 2 * W2 - W, 0, 2 * H2 - H))
        # The concatenation [x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2], x[1::2, 1::2]] as a
        # view: (row parity, column parity) become two axes, column parity outermost. Same
        # values as strided slicing, whose lengths a symbolic tracer cannot prove equal.
        x = x.view(B, H2, 2, W2, 2, C).permute(0, 1, 3, 4, 2, 5).reshape(B, H2, W2, 4 * C)
        if self.norm is not None:
            x = self.norm(x)
        return self.reduction(x)


def relative_position_index(window_size):
    """(w^4,) index into a ((2w-1)^2)-entry table for every (query, key) pair of a window:
    ``(dy + w - 1) * (2w - 1) + (dx + w - 1)`` with ``dy, dx`` = query minus key position."""
    w = window_size
    coords = torch.stack(torch.meshgrid(torch.arange(w), torch.arange(w), indexing='ij'))
    coords = coords.flatten(1)  # (2, w*w)
    rel = coords[:, :, None] - coords[:, None, :] + (w - 1)  # (2, N, N)
    return (rel[0] * (2 * w - 1) + rel[1]).flatten()


class WindowAttention(nn.Module):
    """Multi-head self-attention inside w x w windows with relative position bias (Swin-v1),
    with the official ELSA-Swin names and channel order:

    * ``pre_proj`` (Linear C -> 3C) outputs **v, q, k** in that order;
    * ``rb``: relative position bias table (G, (2w-1)^2); ``relative_id``: (w^4,) buffer;
    * scale ``qk_scale or head_dim ** -0.5``; ``post_proj`` Linear C -> C.

    Shape:
        - Input: (num_windows * B, w*w, C) and an optional additive mask (num_windows, N, N)
        - Output: (num_windows * B, w*w, C)
    """

    def __init__(self, dim, num_heads, window_size=7, qkv_bias=True, qk_scale=None,
                 attn_drop=0., proj_drop=0.):
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f'dim ({dim}) must be divisible by num_heads ({num_heads})')
        self.dim = dim
        self.num_heads = num_heads
        self.window_size = window_size
        self.scale = qk_scale or (dim // num_heads)**-0.5
        self.rb = nn.Parameter(torch.zeros(num_heads, (2 * window_size - 1)**2))
        self.register_buffer('relative_id', relative_position_index(window_size))
        self.pre_proj = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.post_proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        trunc_normal_(self.rb, std=.02)

    def forward(self, x, mask=None):
        Bw, N, C = x.shape
        G = self.num_heads
        vqk = self.pre_proj(x).reshape(Bw, N, 3, G, C // G).permute(2, 0, 3, 1, 4)
        v, q, k = vqk.unbind(0)  # each (Bw, G, N, hd)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.rb[:, self.relative_id].reshape(G, N, N)
        attn = attn + bias.unsqueeze(0)
        if mask is not None:
            nW = mask.shape[0]
            attn = attn.view(Bw // nW, nW, G, N, N) + mask[None, :, None].to(attn.dtype)
            attn = attn.view(Bw, G, N, N)
        attn = self.attn_drop(attn.softmax(dim=-1))
        x = (attn @ v).transpose(1, 2).reshape(Bw, N, C)
        return self.proj_drop(self.post_proj(x))

    def extra_repr(self):
        return f'dim={self.dim}, num_heads={self.num_heads}, window_size={self.window_size}'


def _size_tensor(n, device):
    """A size as a 0-d int64 tensor. Index arithmetic with a size that is symbolic (torch.export)
    then records tensor ops, which the ONNX exporter translates; ``tensor % SymInt`` is not."""
    return torch.full((), n, dtype=torch.long, device=device)


def _window_token_index(Hp, Wp, w, shift, device):
    """(Hp*Wp,) flat pixel of each window token of the map rolled by ``-shift``: token
    (wy, wx, r, c) (window row, window column, row and column in the window, in that order)
    holds pixel ((wy*w + r + shift) % Hp, (wx*w + c + shift) % Wp). Pure 1-D arithmetic, no
    views, so nothing depends on a size being 1."""
    token = torch.arange(Hp * Wp, device=device)
    Hp, Wp = _size_tensor(Hp, device), _size_tensor(Wp, device)
    per_row_of_windows = (Wp // w) * w * w
    wy, rest = token // per_row_of_windows, token % per_row_of_windows
    wx, rest = rest // (w * w), rest % (w * w)
    r, c = rest // w, rest % w
    return ((wy * w + r + shift) % Hp) * Wp + (wx * w + c + shift) % Wp


def _pixel_window_index(H, W, Wp, w, shift, device):
    """(H*W,) inverse of :func:`_window_token_index` restricted to the unpadded H x W pixels:
    the window token holding pixel (i, j), row-major."""
    pixel = torch.arange(H * W, device=device)
    Hp, W, Wp = (_size_tensor(n, device) for n in (round_up(H, w), W, Wp))
    i = (pixel // W - shift) % Hp  # the pixel's row in the rolled map
    j = (pixel % W - shift) % Wp
    window = (i // w) * (Wp // w) + j // w
    return window * (w * w) + (i % w) * w + j % w


def to_windows(x, w, shift):
    """Cyclic shift by ``-shift``, then window partition: (B, Hp, Wp, C), Hp and Wp multiples
    of w -> (B * nW, w*w, C); the same values as ``window_partition(torch.roll(x, (-shift,
    -shift), (1, 2)), w)`` with the usual Swin partition ``x.view(B, Hp/w, w, Wp/w, w, C)``
    ``.permute(0, 1, 3, 2, 4, 5).reshape(-1, w*w, C)``.

    One gather with indices computed from the (possibly symbolic) sizes instead of a roll and
    a 6-D permute: whether those are views or copies depends on sizes being 1 (a single
    window) or paddings being 0, which torch.export would freeze into the exported program.
    """
    B, Hp, Wp, C = x.shape
    index = _window_token_index(Hp, Wp, w, shift, x.device)
    return x.reshape(B, Hp * Wp, C).index_select(1, index).view(-1, w * w, C)


def from_windows(windows, w, shift, H, W):
    """Inverse of :func:`to_windows` followed by the crop to the unpadded H x W:
    (B * nW, w*w, C) -> (B, H, W, C), one gather (see :func:`to_windows`)."""
    C = windows.shape[-1]
    Wp = round_up(W, w)
    index = _pixel_window_index(H, W, Wp, w, shift, windows.device)
    nW_tokens = round_up(H, w) * Wp
    out = windows.reshape(-1, nW_tokens, C).index_select(1, index)
    return out.view(-1, H, W, C)


def shifted_window_mask(Hp, Wp, window_size, shift_size, device):
    """Additive (nW, w*w, w*w) mask for the cyclically shifted windows: -inf between tokens
    that come from different regions of the padded map, 0 elsewhere.

    The release adds -100, which leaves each masked pair a weight of about e^-100 ~ 4e-44: a
    subnormal float32, which x86 CPUs multiply some 30 times slower. Where a window's unmasked
    values are zero (the zero-padded tokens of a model whose biases are zero, as initialised)
    the attention's output is then made of subnormals, and the following Linear ran 33x slower
    (ELSA-Swin-T's last shifted block at 512 x 832: 133 ms instead of 4). -inf gives those
    weights exactly 0. Every row keeps its own token, so no row is all -inf, and the results
    agree with -100's to within e^-100 of the weights (bit for bit on ELSA-Swin-T at 512 x 832;
    docs/elsa_facts.md, section 3).

    Rows ``[0, Hp - w)``, ``[Hp - w, Hp - s)`` and ``[Hp - s, Hp)`` are regions 0, 1, 2 (columns
    likewise) and a pixel's region is ``3 * row region + column region``. Computed with
    comparisons on ``arange`` rather than slice assignments, so that Hp, Wp may be symbolic
    (torch.export, ONNX with dynamic height and width).
    """
    w, s = window_size, shift_size
    rows = torch.arange(Hp, device=device)
    cols = torch.arange(Wp, device=device)
    Hp, Wp = _size_tensor(Hp, device), _size_tensor(Wp, device)
    row_region = (rows >= Hp - w).long() + (rows >= Hp - s).long()
    col_region = (cols >= Wp - w).long() + (cols >= Wp - s).long()
    img = (3 * row_region[:, None] + col_region[None, :]).to(torch.get_default_dtype())
    regions = to_windows(img[None, :, :, None], w, 0).squeeze(-1)  # (nW, N)
    mask = regions.unsqueeze(1) - regions.unsqueeze(2)
    return mask.masked_fill(mask != 0, float('-inf')).masked_fill(mask == 0, 0.0)


class SwinBlock(nn.Module):
    """Swin-v1 (shifted) window attention block. The map is padded right/bottom with zeros
    after ``norm1`` to a multiple of the window (as in the Swin detection backbone) and
    cropped back after attention.

    ``pad_small_map`` (mmpretrain's name and meaning): True (the detection and segmentation
    backbones) shifts whatever the map's size and pads a map smaller than the window; False (the
    classifiers: the official ELSA-Swin and mmpretrain's Swin) does not shift a map that is not
    larger than the window (the official classifier's last stage at 224 x 224: a 7 x 7 map, one
    window) and refuses a map smaller than the window, as mmpretrain does (the official code
    shrinks the window there, which no fixed-size parameter can follow). Decided per call from
    the map's size, inside exported graphs too.

    Shape:
        - Input: (B, H, W, C)
        - Output: (B, H, W, C)
    """

    def __init__(self, dim, num_heads, window_size=7, shift=False, mlp_ratio=4.,
                 qkv_bias=True, qk_scale=None, drop=0., attn_drop=0., drop_path=0.,
                 act_cfg=dict(type='GELU'), norm_cfg=dict(type='LN'), pad_small_map=True):
        super().__init__()
        self.window_size = window_size
        self.shift_size = window_size // 2 if shift else 0
        self.pad_small_map = pad_small_map
        self.norm1 = build_norm(norm_cfg, dim)
        self.attn = WindowAttention(dim, num_heads, window_size=window_size, qkv_bias=qkv_bias,
                                    qk_scale=qk_scale, attn_drop=attn_drop, proj_drop=drop)
        self.drop_path = DropPath(drop_path)
        self.norm2 = build_norm(norm_cfg, dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_cfg=act_cfg, drop=drop)

    def forward(self, x):
        B, H, W, C = x.shape
        w, s = self.window_size, self.shift_size
        shortcut = x
        x = self.norm1(x)
        Hp, Wp = round_up(H, w), round_up(W, w)
        x = F.pad(x, (0, 0, 0, Wp - W, 0, Hp - H))  # unconditional, see PatchEmbed.forward
        if not self.pad_small_map:
            s = self._shift_for(H, W, x.device)
        # a tensor shift (traced sizes) may be 0 at run time: its mask is then all zeros
        shifted = torch.is_tensor(s) or s > 0
        mask = shifted_window_mask(Hp, Wp, w, s, x.device) if shifted else None
        # roll by -s, partition, attention, reverse, roll by +s, crop to H x W
        x = from_windows(self.attn(to_windows(x, w, s), mask), w, s, H, W)
        x = shortcut + self.drop_path(x)
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def _shift_for(self, H, W, device):
        """The shift of an H x W map with ``pad_small_map=False``: none when min(H, W) <= w.
        A plain int for int sizes; a 0-d tensor for traced or symbolic ones, so that an
        exported graph decides at run time (a zero shift gives an all-zero mask)."""
        w = self.window_size
        if isinstance(H, int) and isinstance(W, int):
            if min(H, W) < w:
                raise ValueError(
                    f'SwinBlock: the {H}x{W} map is smaller than the window ({w}) and '
                    f'pad_small_map=False; set pad_small_map=True to pad it, or give a larger '
                    f'input')
            return 0 if min(H, W) <= w else self.shift_size
        if self.shift_size == 0:
            return 0
        larger = torch.minimum(_size_tensor(H, device), _size_tensor(W, device)) > w
        return larger.long() * self.shift_size


__all__ = ['PatchEmbed', 'PatchMerging', 'WindowAttention', 'SwinBlock',
           'relative_position_index', 'to_windows', 'from_windows', 'shifted_window_mask',
           'ceil_div', 'round_up']
