"""The token mixers ELSA-Swin can use in the stages ELSA occupies, for the ELSA paper's opening
comparison (arXiv 2112.12786): a Swin-T whose local self-attention is replaced by a depth-wise
convolution is on par with it, one whose local self-attention is replaced by a dynamic filter
(DDF) beats it, and ELSA beats both.

``ELSASwinTransformer(local_mixer=...)`` picks one of :data:`LOCAL_MIXERS`: 'elsa' (the
:class:`~.elsa_swin.ELSABlock`), 'window' (Swin's own shifted-window block,
:class:`~.swin_layers.SwinBlock`) or one of the two convolutional mixers of
:class:`ConvMixerBlock` defined here.
"""
import difflib

import torch.nn as nn

from ..ops.arguments import check_hyperparameters
from .ddf import DDFPack
from .utils import DropPath, Mlp, build_norm

#: the accepted values of ``ELSASwinTransformer(local_mixer=...)``
LOCAL_MIXERS = ('elsa', 'window', 'dwconv', 'ddf')
#: names people use for a mixer, offered as the suggestion when one of them is given
_SYNONYMS = {'lsa': 'window', 'swin': 'window', 'wmsa': 'window', 'window_attention': 'window',
             'conv': 'dwconv', 'dw': 'dwconv', 'depthwise': 'dwconv', 'dwnet': 'dwconv',
             'dynamic_filter': 'ddf', 'ddfpack': 'ddf'}


def check_local_mixer(name):
    """``name`` if it is one of :data:`LOCAL_MIXERS`, else a one-line ValueError naming the
    closest one."""
    if isinstance(name, str) and name in LOCAL_MIXERS:
        return name
    near = None
    if isinstance(name, str):
        key = name.lower().replace('-', '_')
        near = key if key in LOCAL_MIXERS else _SYNONYMS.get(key)
        if near is None:
            close = difflib.get_close_matches(key, LOCAL_MIXERS + tuple(_SYNONYMS), n=1,
                                              cutoff=0.5)
            near = _SYNONYMS.get(close[0], close[0]) if close else None
    hint = f'; did you mean {near!r}?' if near else ''
    raise ValueError(f'local_mixer must be one of {", ".join(map(repr, LOCAL_MIXERS))}, got '
                     f'{name!r}{hint}')


class ConvMixer(nn.Module):
    """A convolutional token mixer in place of attention: ``pre_proj`` (Linear C -> C), the
    spatial mixer ``spatial``, ``bn`` (BatchNorm2d), ReLU, ``post_proj`` (Linear C -> C), then
    dropout.

    ``spatial`` is a K x K depth-wise convolution (dilation d, zero padding (K // 2) * d, no
    bias: the BatchNorm after it would cancel one) for 'dwconv', or :class:`~.ddf.DDFPack`
    (kernel K, dilation d, ``head`` = the block's heads, ``kernel_combine='mul'``, its other
    arguments at their defaults) for 'ddf'.

    Shape: (B, H, W, C) -> (B, H, W, C).
    """

    def __init__(self, dim, num_heads, spatial='dwconv', kernel_size=7, dilation=1,
                 qkv_bias=True, proj_drop=0.):
        super().__init__()
        check_hyperparameters(kernel_size, dilation, 1)
        self.dim, self.kind = dim, spatial
        # qkv_bias governs the input projection, as it does the attention's pre_proj
        self.pre_proj = nn.Linear(dim, dim, bias=qkv_bias)
        if spatial == 'dwconv':
            self.spatial = nn.Conv2d(dim, dim, kernel_size, padding=(kernel_size // 2) * dilation,
                                     dilation=dilation, groups=dim, bias=False)
        elif spatial == 'ddf':
            self.spatial = DDFPack(dim, kernel_size=kernel_size, dilation=dilation,
                                   head=num_heads, kernel_combine='mul')
        else:
            raise ValueError(f"ConvMixer: spatial must be 'dwconv' or 'ddf', got {spatial!r}")
        self.bn = nn.BatchNorm2d(dim)
        self.act = nn.ReLU(inplace=True)
        self.post_proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x):
        x = self.pre_proj(x).permute(0, 3, 1, 2)
        x = self.act(self.bn(self.spatial(x)))
        return self.proj_drop(self.post_proj(x.permute(0, 2, 3, 1)))

    def extra_repr(self):
        return f'dim={self.dim}, spatial={self.kind}'


class ConvMixerBlock(nn.Module):
    """The ELSA block with a convolutional mixer instead of ELSA:
    ``x + drop_path(mixer(norm1(x)))``, then ``x + drop_path(mlp(norm2(x)))``, ``mixer`` being a
    :class:`ConvMixer`.

    The form of the mixer is our choice: the ELSA paper does not describe its depth-wise
    convolution and DDF baselines and their code is not public. It follows DWNet (Han et al.,
    "On the Connection between Local Attention and Dynamic Depth-wise Convolution", arXiv
    2106.04263), whose block has, where Swin has window attention, a 1x1 projection, a
    depth-wise convolution, BatchNorm and ReLU, and a 1x1 projection; the DDF mixer puts
    DDFPack where the depth-wise convolution is. DWNet's released code
    (Atten4Vis/DemystifyLocalViT) also puts a BatchNorm after each projection (and a ReLU
    after the first) and uses BatchNorm for the block's two norms; here the rest of the block
    is the ELSA block's (LayerNorms, MLP, stochastic depth), so that only the mixer differs
    between the variants compared.

    With ``with_cp`` (activation checkpointing) the BatchNorm's running statistics are updated
    twice per training step, once more by the recomputation.

    Args:
        dim (int): Channels C.
        num_heads (int): DDF's spatial filters per pixel (heads); unused by 'dwconv'.
        mixer (str): 'dwconv' or 'ddf'.
        kernel_size (int): Odd K. Default: 7.
        dilation (int): Dilation d. Default: 1.
        mlp_ratio (float): MLP hidden width / C.
        qkv_bias (bool): Bias of ``mixer.pre_proj``.
        drop (float): Dropout after ``mixer.post_proj`` and in the MLP.
        drop_path (float): Stochastic depth rate of this block.
        act_cfg, norm_cfg (dict): The MLP's activation, the LayerNorms' config.

    Shape:
        - Input: (B, H, W, C)
        - Output: (B, H, W, C)
    """

    def __init__(self, dim, num_heads, mixer='dwconv', kernel_size=7, dilation=1, mlp_ratio=4.,
                 qkv_bias=True, drop=0., drop_path=0., act_cfg=dict(type='GELU'),
                 norm_cfg=dict(type='LN')):
        super().__init__()
        self.norm1 = build_norm(norm_cfg, dim)
        self.mixer = ConvMixer(dim, num_heads, spatial=mixer, kernel_size=kernel_size,
                               dilation=dilation, qkv_bias=qkv_bias, proj_drop=drop)
        self.drop_path = DropPath(drop_path)
        self.norm2 = build_norm(norm_cfg, dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_cfg=act_cfg, drop=drop)

    def forward(self, x):
        x = x + self.drop_path(self.mixer(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


__all__ = ['LOCAL_MIXERS', 'check_local_mixer', 'ConvMixer', 'ConvMixerBlock']
