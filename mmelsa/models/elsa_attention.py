"""The ELSA module: Hadamard attention plus ghost head, evaluated by the ELSA operator.

This is the token mixer of ELSA-Swin's first three stages (docs/elsa_facts.md, section 2,
"The ELSA block"). The module only prepares the per-pixel attention and the ghost matrices; the
aggregation of the K x K neighbourhood is done by :func:`mmelsa.ops.elsa_attention`, which never
materialises the unfolded (B, C, K*K, H, W) tensor.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.init import trunc_normal_

from .. import ops
from ..ops.arguments import check_hyperparameters
from ..ops.onnx import is_exporting
from ..ops.onnx_bands import elsa_band_form_channels_last
from .grouped_conv import GroupedConv2d
from .utils import build_activation


def ghost_head_shape(dim, kernel_size, lam, gamma):
    """Shape of the ``ghost_head`` parameter for the given ``lam``/``gamma`` mode.

    The shapes are those of the official checkpoints, so that they load by name:

    ========  ========  ======================  ===================================
    lam       gamma     shape                   meaning
    ========  ========  ======================  ===================================
    0         != 0      (1, C, K, K)            ghost_add (ghost_mul is all ones)
    != 0      != 0      (2, 1, C, K, K)         [0] ghost_mul, [1] ghost_add
    != 0      0         (1, C, K, K)            ghost_mul (ghost_add is all zeros)
    0         0         None                    no ghost head at all
    ========  ========  ======================  ===================================
    """
    if lam != 0 and gamma != 0:
        return (2, 1, dim, kernel_size, kernel_size)
    if lam != 0 or gamma != 0:
        return (1, dim, kernel_size, kernel_size)
    return None


def _check_lam(lam):
    """``ghost_mul ** lam`` must be defined for the negative entries ``ghost_mul`` holds."""
    if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not math.isfinite(lam):
        raise ValueError(f'lam must be a finite number, got {lam!r}')
    if lam != int(lam):
        raise ValueError(
            f'lam must be a whole number (0 disables the multiplicative ghost), got {lam}: the '
            'ghost head ghost_mul is signed (initialised from a standard normal, as in the '
            'official release), and a fractional power of a negative number is NaN, which '
            'would make every output NaN')


class ELSAAttention(nn.Module):
    """Enhanced local self-attention (ELSA, arXiv 2112.12786) on a channels-last feature map.

    Steps (docs/elsa_facts.md, section 2):

    1. ``pre_proj`` (1x1 conv, C -> 2*dim_qk + C) gives q, k (dim_qk each) and v (C), in that
       order; ``dim_qk`` is ``(C // 3) * 2`` rounded up to a multiple of ``group_width``.
    2. Hadamard attention ``h = q * k * qk_scale`` (ELSA-Swin uses ``qk_scale=1``).
    3. ``attn`` = depth-wise-grouped KxK conv (groups ``dim_qk // group_width``), activation,
       1x1 conv to ``num_heads * K * K`` channels; head ``g`` owns channels
       ``[g*K*K, (g+1)*K*K)`` and is softmaxed over them; then attention dropout. When the
       dropout is inactive (``attn_drop=0`` or eval mode) the softmax is fused into the
       operator of step 5 (``attn_is_logits=True``).
    4. Ghost head (``lam``/``gamma``, see :func:`ghost_head_shape`): the operator receives
       ``ghost_mul ** lam`` and ``ghost_add * gamma``.
    5. ``mmelsa.ops.elsa_attention(v, attn, ghost_mul, ghost_add)``, then ``post_proj``
       (Linear C -> C) and projection dropout.

    Args:
        dim (int): Channels C.
        num_heads (int): Attention heads G; ``dim % num_heads == 0``.
        kernel_size (int): Odd neighbourhood size K. Default: 7.
        dilation (int): Neighbourhood dilation. Default: 1.
        group_width (int): Channels per group of the KxK conv in ``attn``. Default: 8.
        qk_scale (float): Scale of the Hadamard product. Default: 1.0.
        lam (float): Exponent of the multiplicative ghost, a whole number (0 disables it;
            fractional powers of the signed ghost are undefined and refused). Default: 0.
        gamma (float): Weight of the additive ghost (0 disables it). Default: 1.
        qkv_bias (bool): Bias in ``pre_proj``. Default: True.
        attn_drop (float): Dropout on the softmaxed attention. Default: 0.
        proj_drop (float): Dropout after ``post_proj``. Default: 0.
        act_cfg (dict): Activation between the two convs of ``attn``. Default: GELU.

    Shape:
        - Input: (B, H, W, C)
        - Output: (B, H, W, C)
    """

    def __init__(self,
                 dim,
                 num_heads,
                 kernel_size=7,
                 dilation=1,
                 group_width=8,
                 qk_scale=1.0,
                 lam=0.,
                 gamma=1.,
                 qkv_bias=True,
                 attn_drop=0.,
                 proj_drop=0.,
                 act_cfg=dict(type='GELU')):
        super().__init__()
        # the operator's own checks (types, odd kernel, bounds), at build time rather than at
        # the first forward, where a float dilation would fail inside conv2d without naming
        # the argument
        check_hyperparameters(kernel_size, dilation, 1)
        if dim < 3:  # two thirds of the channels, rounded down, form q and k
            raise ValueError(f'dim must be >= 3, got {dim}')
        if group_width < 1:
            raise ValueError(f'group_width must be >= 1, got {group_width}')
        if num_heads < 1 or dim % num_heads != 0:
            raise ValueError(f'dim ({dim}) must be divisible by num_heads ({num_heads})')
        _check_lam(lam)
        self.dim = dim
        self.num_heads = num_heads
        self.kernel_size = kernel_size
        self.dilation = dilation
        self.group_width = group_width
        self.qk_scale = qk_scale
        self.lam = lam
        self.gamma = gamma
        # Two thirds of the channels for q and k, rounded up so the grouped conv divides them.
        dim_qk = (dim // 3) * 2
        dim_qk = int(math.ceil(dim_qk / group_width)) * group_width
        self.dim_qk = dim_qk

        # Registered first so that the state-dict order is that of the official files.
        shape = ghost_head_shape(dim, kernel_size, lam, gamma)
        if shape is None:
            self.register_parameter('ghost_head', None)
        else:
            self.ghost_head = nn.Parameter(torch.empty(shape))
        self.pre_proj = nn.Conv2d(dim, 2 * dim_qk + dim, 1, bias=qkv_bias)
        kk = kernel_size * kernel_size
        self.attn = nn.Sequential(
            # an nn.Conv2d that exports as depth-wise convolutions (ONNX Runtime's fast path)
            GroupedConv2d(dim_qk, dim_qk, kernel_size, padding=(kernel_size // 2) * dilation,
                          dilation=dilation, groups=dim_qk // group_width),
            build_activation(act_cfg),
            nn.Conv2d(dim_qk, kk * num_heads, 1))
        self.attn_drop = nn.Dropout(attn_drop)

        self.post_proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.reset_ghost_head()

    def reset_ghost_head(self):
        """ghost_add ~ truncated normal (std 0.02), ghost_mul ~ standard normal."""
        gh = self.ghost_head
        if gh is None:
            return
        with torch.no_grad():
            if self.lam != 0 and self.gamma != 0:
                nn.init.normal_(gh[0])
                trunc_normal_(gh[1], std=.02)
            elif self.lam != 0:
                nn.init.normal_(gh)
            else:
                trunc_normal_(gh, std=.02)

    def ghosts(self):
        """Return ``(ghost_mul ** lam, ghost_add * gamma)``, each (C, K, K) or None."""
        gh = self.ghost_head
        if gh is None:
            return None, None
        if self.lam != 0 and self.gamma != 0:
            return gh[0, 0] ** self.lam, gh[1, 0] * self.gamma
        if self.lam != 0:
            return gh[0] ** self.lam, None
        return None, gh[0] * self.gamma

    def forward(self, x):
        """x: (B, H, W, C) -> (B, H, W, C)."""
        if is_exporting() and self.lam == 0:
            return self._forward_channels_last(x)
        B, H, W, C = x.shape
        x = self.pre_proj(x.permute(0, 3, 1, 2))
        q, k, v = torch.split(x, [self.dim_qk, self.dim_qk, C], dim=1)
        # q, k are channel slices of a channels-last map; their product is a dense channels-
        # last map, so the same conv kernel runs. When traced they are made dense first (two
        # copies), because torch.export and torch.compile cannot reason about the strides of
        # a product of such slices with a symbolic width: they would specialise W.
        if is_exporting() or torch.compiler.is_compiling():
            q = q.contiguous(memory_format=torch.channels_last)
            k = k.contiguous(memory_format=torch.channels_last)
        attn = self.attn((q * k).mul_(self.qk_scale))
        kk = self.kernel_size * self.kernel_size
        attn = attn.reshape(B, self.num_heads, kk, H, W)
        fused = self._softmax_fused()
        if not fused:
            attn = self.attn_drop(attn.softmax(dim=2))
        ghost_mul, ghost_add = self.ghosts()
        # v is a channel slice of pre_proj's channels-last output and attn a view of the 1x1
        # conv's channels-last output: the operator reads both in place and returns a
        # channels-last map (CPU; CUDA with kernel_size 7, dilation 1, its tiled kernels), so
        # the permute below is a view and post_proj gets a dense (B, H, W, C) tensor (no
        # layout copy in the block).
        out = ops.elsa_attention(
            v, attn, ghost_mul, ghost_add, kernel_size=self.kernel_size,
            dilation=self.dilation, stride=1, attn_is_logits=fused)
        out = self.post_proj(out.permute(0, 2, 3, 1))
        return self.proj_drop(out)

    def _softmax_fused(self):
        """Whether the softmax goes into the operator (attn_is_logits): with the dropout
        inactive, the probabilities are never stored, and under AMP no fp32 copy of the map is
        made. A live dropout acts between the softmax and the aggregation, so it needs them
        separately."""
        return self.attn_drop.p == 0 or not self.training

    def _forward_channels_last(self, x):
        """The forward as exported where the band form applies (no multiplicative ghost), with
        every map channels last: q, k and v are three MatMuls (no Split copy), the attention
        branch's 1x1 convolution is a MatMul whose output has each head's taps last (softmaxed
        there), and the band form returns the map ``post_proj`` takes. Only the two depth-wise
        convolutions see NCHW maps, and ONNX Runtime folds most of those layout changes into
        the reorders of its blocked convolution. docs/benchmarks.md, "ONNX Runtime: channels
        last", has the measurements."""
        # slices rather than a split of the weight, at the module's own sizes (not x's traced
        # ones): exporters fold a Slice of a constant, not always a Split with several outputs
        weight, bias, ends = self.pre_proj.weight.flatten(1), self.pre_proj.bias, (
            0, self.dim_qk, 2 * self.dim_qk, 2 * self.dim_qk + self.dim)
        q, k, v = (F.linear(x, weight[a:b], None if bias is None else bias[a:b])
                   for a, b in zip(ends, ends[1:]))
        attn = self.attn[1](self.attn[0].forward_channels_last((q * k) * self.qk_scale))
        attn = F.linear(attn, self.attn[2].weight.flatten(1), self.attn[2].bias)
        fused = self._softmax_fused()
        if not fused:
            shape = attn.shape
            attn = attn.reshape(shape[:3] + (self.num_heads, -1)).softmax(-1)
            attn = self.attn_drop(attn).reshape(shape)
        _, ghost_add = self.ghosts()
        out = elsa_band_form_channels_last(v, attn, self.num_heads, ghost_add,
                                           self.kernel_size, self.dilation, fused)
        return self.proj_drop(self.post_proj(out))

    def extra_repr(self):
        return (f'dim={self.dim}, num_heads={self.num_heads}, kernel_size={self.kernel_size}, '
                f'dilation={self.dilation}, group_width={self.group_width}, '
                f'dim_qk={self.dim_qk}, lam={self.lam}, gamma={self.gamma}')
