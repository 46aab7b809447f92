"""ELSA-Swin: Swin Transformer whose first three stages use ELSA instead of window attention.

A drop-in replacement for mmdet's / mmseg's ``SwinTransformer`` backbone (same constructor
arguments, same outputs), with the state-dict layout of the official ELSA checkpoints
(docs/elsa_facts.md, sections 4-5), so those load by name. Feature maps travel channels-last
(B, H, W, C) between blocks: LayerNorm and Linear want that layout, and only the ELSA
convolutions permute.

This module holds the ELSA block, the stage and the backbone; the Swin layers they are built
with (patch embedding and merging, window attention, the Swin block) are in
:mod:`.swin_layers`, and are importable from here as well.
"""
import logging
import warnings

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmengine.logging import print_log
from mmengine.model import BaseModule
from torch.nn.init import trunc_normal_

from .official_weights import load_official_weights
from .elsa_attention import ELSAAttention
from .local_mixers import ConvMixerBlock, check_local_mixer
from .swin_layers import (PatchEmbed, PatchMerging, SwinBlock, WindowAttention,
                          relative_position_index)
from .utils import DropPath, Mlp, SuggestsArguments, build_norm, to_2tuple


def patch_grid(img_size, patch_size):
    """(h, w) patches of a pretraining image (int, (s, ) or (h, w)), as mmdet's Swin counts
    them for its absolute position embedding: img_size // patch_size."""
    size = tuple(img_size) if isinstance(img_size, (tuple, list)) else (img_size, )
    size = size * 2 if len(size) == 1 else size
    if len(size) != 2 or not all(isinstance(s, int) and s >= patch_size for s in size):
        raise ValueError(f'use_abs_pos_embed: pretrain_img_size must be an int or 1 or 2 ints, '
                         f'each at least patch_size ({patch_size}), got {img_size!r}')
    return size[0] // patch_size, size[1] // patch_size


class ELSABlock(nn.Module):
    """Transformer block with ELSA as token mixer:
    ``x + drop_path(attn(norm1(x)))``, then ``x + drop_path(mlp(norm2(x)))``.

    Args:
        dim (int): Channels C.
        num_heads (int): ELSA heads.
        kernel_size, dilation, group_width, lam, gamma: see :class:`ELSAAttention`.
        mlp_ratio (float): MLP hidden width / C.
        qkv_bias (bool): Bias of ``attn.pre_proj``.
        drop (float): Dropout after the attention projection and in the MLP.
        attn_drop (float): Dropout on the attention weights.
        drop_path (float): Stochastic depth rate of this block.
        act_cfg, norm_cfg (dict): Activation and norm configs.

    Shape:
        - Input: (B, H, W, C)
        - Output: (B, H, W, C)
    """

    def __init__(self, dim, num_heads, kernel_size=7, dilation=1, group_width=8, lam=0.,
                 gamma=1., mlp_ratio=4., qkv_bias=True, drop=0., attn_drop=0., drop_path=0.,
                 act_cfg=dict(type='GELU'), norm_cfg=dict(type='LN')):
        super().__init__()
        self.norm1 = build_norm(norm_cfg, dim)
        self.attn = ELSAAttention(dim, num_heads, kernel_size=kernel_size, dilation=dilation,
                                  group_width=group_width, qk_scale=1.0, lam=lam, gamma=gamma,
                                  qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=drop,
                                  act_cfg=act_cfg)
        self.drop_path = DropPath(drop_path)
        self.norm2 = build_norm(norm_cfg, dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_cfg=act_cfg, drop=drop)

    def forward(self, x):
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class ELSASwinStage(nn.Module):
    """One stage: ``blocks`` (ELSA or Swin blocks) then an optional ``downsample``.

    Returns the stage output before merging (for the pyramid) and after it (for the next stage).

    Shape:
        - Input: (B, H, W, C)
        - Output: (B, H, W, C), (B, ceil(H/2), ceil(W/2), 2C) (the input to the next stage; the
          same tensor as the first when there is no ``downsample``)
    """

    def __init__(self, blocks, downsample=None, with_cp=False):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample
        self.with_cp = with_cp

    def forward(self, x):
        for blk in self.blocks:
            if self.with_cp and torch.is_grad_enabled():
                # Recompute the block in backward instead of keeping its activations;
                # the RNG state is restored, so dropout/drop path masks are identical.
                x = cp.checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
        out = x
        if self.downsample is not None:
            x = self.downsample(x)
        return out, x


class ELSASwinTransformer(SuggestsArguments, BaseModule):
    """ELSA-Swin backbone (arXiv 2112.12786) for mmdet, mmseg and mmpretrain.

    Accepts every argument of mmdet's / mmseg's ``SwinTransformer`` with the same meaning (and
    mmdet's positional order), and mmpretrain's (see below), so changing
    ``type='SwinTransformer'`` to ``type='ELSASwinTransformer'`` in a config is enough. The
    stages listed in ``elsa_stages`` use ELSA blocks (or the ``local_mixer`` chosen), the others
    Swin window attention (the official model: ELSA in stages 0-2, Swin in stage 3).

    Args:
        pretrain_img_size (int | tuple[int]): Image size the absolute position embedding is
            made for (``use_abs_pos_embed=True``): one embedding per patch of its
            ``pretrain_img_size // patch_size`` grid. Unused otherwise. Default: 224.
        in_channels (int): Input channels. Default: 3.
        embed_dims (int): Channels of the first stage. Default: 96.
        patch_size (int): Patch size of the patch embedding. Default: 4.
        window_size (int): Window of the Swin stages. Default: 7.
        mlp_ratio (float): MLP hidden width / channels. Default: 4.
        depths (Sequence[int]): Blocks per stage. Default: (2, 2, 6, 2).
        num_heads (Sequence[int]): Heads per stage. Default: (3, 6, 12, 24).
        strides (Sequence[int]): Patch embedding / merging strides; must be
            ``(patch_size, 2, 2, ...)`` (merging is always 2x2). Default: (4, 2, 2, 2).
        out_indices (Sequence[int]): Stages whose (normalised) output is returned.
            Default: (0, 1, 2, 3).
        qkv_bias (bool): Bias of the q/k/v projections (``pre_proj``). Default: True.
        qk_scale (float, optional): Attention scale of the Swin stages; default
            ``head_dim ** -0.5``. The ELSA stages always use 1 (Hadamard attention).
        patch_norm (bool): LayerNorm after patch embedding and in patch merging. Default: True.
        drop_rate (float): Dropout after the patch embedding, attention projections and MLPs.
        attn_drop_rate (float): Attention-weight dropout. Default: 0.
        drop_path_rate (float): Stochastic depth, linearly increasing over all blocks.
            Default: 0.1.
        use_abs_pos_embed (bool): Add a learned absolute position embedding
            ``absolute_pos_embed`` (1, num_patches, embed_dims) to the patch embedding, then
            dropout, as mmdet's Swin does (the official ELSA-Swin has none: default False).
            Its patch grid is fixed, so every input must give that grid: a different one is
            refused rather than broadcast or resized.
        act_cfg (dict): Activation of the MLPs and of the ELSA attention convs.
            Default: dict(type='GELU').
        norm_cfg (dict): LayerNorm config ('LN', optional ``eps``, ``requires_grad``).
        with_cp (bool): Activation checkpointing per block (saves memory, costs a recompute).
        pretrained (str, optional): Deprecated, as in mmdet: same as
            ``init_cfg=dict(type='Pretrained', checkpoint=pretrained)``.
        convert_weights (bool): Accepted for compatibility with mmdet's Swin configs. Official
            ELSA checkpoints (ImageNet, COCO, ADE20K) already use this module's names; their
            extra keys are always removed on loading, so the flag changes nothing.
        frozen_stages (int): -1: nothing frozen; 0: patch embedding; i >= 1: patch embedding,
            stages < i and their output norms (eval mode, no gradients, kept across
            ``train()``). Default: -1.
        init_cfg (dict, optional): ``dict(type='Pretrained', checkpoint=PATH_OR_URL)`` loads an
            official checkpoint (``prefix`` is honoured). A file that does not fit (a plain Swin
            checkpoint, another model size) is refused unless ``allow_partial=True`` is given
            in that dict. Other initialisers are applied after the default initialisation.
        arch (str, optional): 'tiny', 'small' or 'base' (or 't', 's', 'b'): presets for
            ``embed_dims``, ``depths``, ``num_heads`` and ``group_width``. Giving one of those
            explicitly with a different value is an error. Default: None (tiny's values, the
            same defaults as mmdet's SwinTransformer).
        elsa_kernel_size (int): ELSA neighbourhood K (odd). Default: 7.
        elsa_dilation (int): ELSA neighbourhood dilation. Default: 1.
        group_width (int, optional): Channels per group of ELSA's KxK conv. Default: the
            preset's (tiny 4, small/base 8) when the architecture matches one, else 8.
        lam (float): ELSA ghost head exponent, a whole number (0: no multiplicative ghost).
            Default: 0.
        gamma (float): ELSA ghost head additive weight (0: none). Default: 1.
        elsa_stages (Sequence[int]): Stages built from ELSA blocks. Default: (0, 1, 2).
        local_mixer (str): Token mixer of the blocks in ``elsa_stages``, for the ELSA paper's
            comparison of local operators (docs/elsa_facts.md, "Baselines of the paper's
            comparison"). 'elsa': ELSA (the official model). 'window': Swin's shifted-window
            attention, shift alternating from 0 in every stage (with the default stages, a
            Swin Transformer). 'dwconv': a depth-wise ``elsa_kernel_size`` convolution,
            'ddf': a DDF layer (DDFPack, kernel ``elsa_kernel_size``, the stage's heads,
            'mul'), each between 1x1 projections with BatchNorm and ReLU
            (:class:`~.local_mixers.ConvMixerBlock`). ``group_width``, ``lam`` and ``gamma``
            act on 'elsa' only; ``elsa_kernel_size`` and ``elsa_dilation`` on 'elsa',
            'dwconv' and 'ddf'; ``window_size`` on 'window' (and on the other stages).
            Default: 'elsa'.
        conv_stem (dict | None): None (default): the patchify convolution (the official
            model). A dict of :class:`~.conv_stem.ConvStem` arguments (``{}`` for its
            defaults: 7x7 stride 2 -> 3x3 -> 3x3, 64 channels, BatchNorm + ReLU, then a 2x2
            projection) puts the scaled-ReLU convolutional stem in the patchify
            convolution's place (``patch_embed.proj``), reaching the same stride.

    mmpretrain's ``SwinTransformer`` arguments are accepted too, with mmpretrain's meaning, so
    that an mmpretrain Swin config with only the type changed works. Any of ``img_size``,
    ``out_after_downsample``, ``interpolate_mode``, ``norm_eval``, ``stage_cfgs``,
    ``patch_cfg`` or a dict ``arch`` selects mmpretrain's conventions for the
    arguments the toolboxes share: ``out_indices`` defaults to the last stage only,
    ``frozen_stages=i`` freezes stages 0..i (mmdet / mmseg: stages < i) and ``drop_rate`` is
    the dropout after the patch embedding only.

        arch (dict): ``embed_dims``, ``depths``, ``num_heads`` (and optionally
            ``group_width``); 'large' does not exist for ELSA-Swin.
        img_size (int | tuple[int]): mmdet's ``pretrain_img_size`` (giving both, different,
            is an error).
        out_after_downsample (bool): only False (outputs before patch merging).
        interpolate_mode (str): accepted, unused: the absolute position embedding is never
            resized; inputs must give its ``img_size // patch_size`` grid.
        norm_eval (bool): keep the BatchNorms (of the 'dwconv' / 'ddf' mixers and of a
            ``conv_stem``) in eval mode while training; no effect without them.
        pad_small_map (bool): how the window blocks treat a map not larger than the window
            (:class:`~.swin_layers.SwinBlock`): True pads it and keeps the shift (mmdet's and
            mmseg's Swin, the detection and segmentation backbones); False does not shift it
            and refuses a smaller one (mmpretrain's Swin and the official ELSA-Swin
            classifier, whose last stage at 224 x 224 is one unshifted 7 x 7 window).
            Default: False with mmpretrain's arguments, True otherwise.
        stage_cfgs, patch_cfg (dict): only empty ones; the blocks and the patch embedding are
            set by the arguments above.

    Shape:
        - Input: (B, in_channels, H, W), any H, W >= 1
        - Output: tuple over ``out_indices`` of (B, embed_dims * 2**i, H_i, W_i) with
          H_0 = ceil(H / patch_size), H_{i+1} = ceil(H_i / 2) (likewise W)
    """

    arch_zoo = {
        'tiny': dict(embed_dims=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24),
                     group_width=4),
        'small': dict(embed_dims=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24),
                      group_width=8),
        'base': dict(embed_dims=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32),
                     group_width=8),
    }
    _arch_alias = {'t': 'tiny', 's': 'small', 'b': 'base'}
    _default_arch = 'tiny'

    def __init__(self,
                 pretrain_img_size=224,
                 in_channels=3,
                 embed_dims=None,
                 patch_size=4,
                 window_size=7,
                 mlp_ratio=4,
                 depths=None,
                 num_heads=None,
                 strides=(4, 2, 2, 2),
                 out_indices=None,
                 qkv_bias=True,
                 qk_scale=None,
                 patch_norm=True,
                 drop_rate=0.,
                 attn_drop_rate=0.,
                 drop_path_rate=0.1,
                 use_abs_pos_embed=False,
                 act_cfg=dict(type='GELU'),
                 norm_cfg=dict(type='LN'),
                 with_cp=False,
                 pretrained=None,
                 convert_weights=False,
                 frozen_stages=-1,
                 init_cfg=None,
                 arch=None,
                 elsa_kernel_size=7,
                 elsa_dilation=1,
                 group_width=None,
                 lam=0.,
                 gamma=1.,
                 elsa_stages=(0, 1, 2),
                 local_mixer='elsa',
                 conv_stem=None,
                 img_size=None,
                 out_after_downsample=None,
                 interpolate_mode=None,
                 norm_eval=None,
                 pad_small_map=None,
                 stage_cfgs=None,
                 patch_cfg=None):
        # --- deprecated `pretrained`, as mmdet/mmseg handle it
        if init_cfg is not None and pretrained is not None:
            raise ValueError('init_cfg and pretrained cannot be specified at the same time')
        if isinstance(pretrained, str):
            warnings.warn('DeprecationWarning: pretrained is deprecated, please use '
                          '"init_cfg" instead')
            init_cfg = dict(type='Pretrained', checkpoint=pretrained)
        elif pretrained is not None:
            raise TypeError(f'pretrained must be a str or None, got {type(pretrained)}')
        super().__init__(init_cfg=init_cfg)

        # --- mmpretrain's SwinTransformer arguments (see _mmpretrain_args)
        mmpretrain_style = img_size is not None or isinstance(arch, dict) or any(
            v is not None for v in (out_after_downsample, interpolate_mode, norm_eval,
                                    stage_cfgs, patch_cfg))
        if pad_small_map is None:  # the default of the Swin these arguments come from
            pad_small_map = not mmpretrain_style
        if isinstance(arch, dict):
            arch, embed_dims, depths, num_heads, group_width = self._arch_dict(
                arch, embed_dims, depths, num_heads, group_width)
        pretrain_img_size = self._mmpretrain_args(
            img_size=img_size, pretrain_img_size=pretrain_img_size,
            out_after_downsample=out_after_downsample, interpolate_mode=interpolate_mode,
            norm_eval=norm_eval, stage_cfgs=stage_cfgs,
            patch_cfg=patch_cfg)
        self.norm_eval = bool(norm_eval)  # acts on the BatchNorms of the conv mixers only
        local_mixer = check_local_mixer(local_mixer)

        embed_dims, depths, num_heads, group_width = self._resolve_arch(
            arch, embed_dims, depths, num_heads, group_width)
        num_layers = len(depths)
        if out_indices is None:
            # mmpretrain's default is the last stage only (its classifiers use nothing else);
            # mmdet's and mmseg's every stage.
            out_indices = (num_layers - 1, ) if mmpretrain_style else (0, 1, 2, 3)
        block_drop_rate = drop_rate
        if mmpretrain_style:
            # mmpretrain's drop_rate is the dropout after the patch embedding only, and its
            # frozen_stages=i freezes stages 0..i (mmdet's / mmseg's: stages < i).
            block_drop_rate = 0.
            if not isinstance(frozen_stages, int) or not -1 <= frozen_stages < num_layers:
                raise ValueError(f'frozen_stages must be in [-1, {num_layers - 1}] (mmpretrain '
                                 f'counts stages from 0), got {frozen_stages!r}')
            frozen_stages = frozen_stages + 1 if frozen_stages >= 0 else -1
        out_indices = self._check_args(
            num_layers=num_layers, num_heads=num_heads, pretrain_img_size=pretrain_img_size,
            patch_size=patch_size, strides=strides, out_indices=out_indices,
            use_abs_pos_embed=use_abs_pos_embed, frozen_stages=frozen_stages,
            window_size=window_size, elsa_stages=elsa_stages, embed_dims=embed_dims,
            in_channels=in_channels, mlp_ratio=mlp_ratio)
        if not 0. <= drop_path_rate <= 1.:
            raise ValueError(f'drop_path_rate must be in [0, 1], got {drop_path_rate}')
        patch_size = to_2tuple(patch_size)[0]

        self.arch_settings = dict(embed_dims=embed_dims, depths=depths, num_heads=num_heads,
                                  group_width=group_width)
        self.embed_dims = embed_dims
        self.depths = depths
        self.num_heads = num_heads
        self.group_width = group_width
        self.out_indices = out_indices
        self.frozen_stages = frozen_stages
        self.elsa_stages = tuple(sorted(set(int(i) for i in elsa_stages)))
        self.local_mixer = local_mixer
        self.convert_weights = convert_weights
        self.use_abs_pos_embed = bool(use_abs_pos_embed)
        self.with_cp = with_cp

        self.patch_embed = PatchEmbed(in_channels, embed_dims, patch_size,
                                      norm_cfg if patch_norm else None, conv_stem=conv_stem)
        if self.use_abs_pos_embed:
            # mmdet's name and layout: one row per patch of the pretraining grid, row-major,
            # so mmdet-trained checkpoints load by name.
            self.abs_pos_grid = patch_grid(pretrain_img_size, patch_size)
            self.absolute_pos_embed = nn.Parameter(
                torch.zeros(1, self.abs_pos_grid[0] * self.abs_pos_grid[1], embed_dims))
        self.drop_after_pos = nn.Dropout(p=drop_rate)

        dpr = [r.item() for r in torch.linspace(0, drop_path_rate, sum(depths))]
        self.num_features = [int(embed_dims * 2**i) for i in range(num_layers)]
        self.layers = nn.ModuleList()
        for i in range(num_layers):
            dim = self.num_features[i]
            rates = dpr[sum(depths[:i]):sum(depths[:i + 1])]
            # The one place the block type is chosen: local_mixer in elsa_stages, Swin's
            # window attention elsewhere.
            mixer = local_mixer if i in self.elsa_stages else 'window'
            if mixer == 'elsa':
                blocks = [
                    ELSABlock(dim, num_heads[i], kernel_size=elsa_kernel_size,
                              dilation=elsa_dilation, group_width=group_width, lam=lam,
                              gamma=gamma, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                              drop=block_drop_rate, attn_drop=attn_drop_rate,
                              drop_path=rates[j],
                              act_cfg=act_cfg, norm_cfg=norm_cfg) for j in range(depths[i])
                ]
            elif mixer in ('dwconv', 'ddf'):
                blocks = [
                    ConvMixerBlock(dim, num_heads[i], mixer=mixer, kernel_size=elsa_kernel_size,
                                   dilation=elsa_dilation, mlp_ratio=mlp_ratio,
                                   qkv_bias=qkv_bias, drop=block_drop_rate, drop_path=rates[j],
                                   act_cfg=act_cfg, norm_cfg=norm_cfg) for j in range(depths[i])
                ]
            else:
                blocks = [
                    SwinBlock(dim, num_heads[i], window_size=window_size, shift=j % 2 == 1,
                              mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_scale=qk_scale,
                              drop=block_drop_rate, attn_drop=attn_drop_rate,
                              drop_path=rates[j], act_cfg=act_cfg, norm_cfg=norm_cfg,
                              pad_small_map=pad_small_map) for j in range(depths[i])
                ]
            downsample = None
            if i < num_layers - 1:
                downsample = PatchMerging(dim, norm_cfg if patch_norm else None)
            self.layers.append(ELSASwinStage(blocks, downsample, with_cp=with_cp))

        for i in out_indices:
            self.add_module(f'norm{i}', build_norm(norm_cfg, self.num_features[i]))

        self._init_default_weights()
        self._freeze_stages()

    # ------------------------------------------------------------------ arguments
    _arch_dict_keys = ('embed_dims', 'depths', 'num_heads')

    @classmethod
    def _arch_dict(cls, arch, embed_dims, depths, num_heads, group_width):
        """mmpretrain's ``arch`` dict (embed_dims, depths, num_heads; group_width optional)
        as the explicit arguments; giving one of them also with another value is an error."""
        keys = set(arch)
        needed = set(cls._arch_dict_keys)
        if not needed <= keys or not keys <= needed | {'group_width'}:
            raise ValueError(f'arch as a dict needs exactly the keys {sorted(needed)} (and '
                             f'optionally group_width), got {sorted(keys)}')
        given = dict(embed_dims=embed_dims, depths=depths, num_heads=num_heads,
                     group_width=group_width)
        for name, value in given.items():
            if value is None or name not in arch:
                continue
            v = tuple(value) if isinstance(value, (list, tuple)) else value
            a = tuple(arch[name]) if isinstance(arch[name], (list, tuple)) else arch[name]
            if v != a:
                raise ValueError(f'{name}={value!r} conflicts with arch={arch!r}; give one or '
                                 f'the other')
        return (None, arch['embed_dims'], tuple(arch['depths']), tuple(arch['num_heads']),
                arch.get('group_width', group_width))

    @staticmethod
    def _mmpretrain_args(img_size, pretrain_img_size, out_after_downsample, interpolate_mode,
                         norm_eval, stage_cfgs, patch_cfg):
        """Check mmpretrain's SwinTransformer arguments; returns the pretraining image size.

        ``img_size`` is mmdet's ``pretrain_img_size``. The others either match what ELSA-Swin
        does (``out_after_downsample=False``, empty ``stage_cfgs`` / ``patch_cfg``), have
        nothing to act on (``norm_eval``: there is no BatchNorm; ``interpolate_mode``: the
        absolute position embedding is not resized, inputs must give its grid), or are refused
        by name. (``pad_small_map`` is an argument of the window blocks.)"""
        if img_size is not None:
            if pretrain_img_size not in (224, img_size):  # 224: the default, not given
                raise ValueError(f'img_size={img_size!r} (mmpretrain\'s name) and '
                                 f'pretrain_img_size={pretrain_img_size!r} (mmdet\'s) name the '
                                 f'same size; give one')
            pretrain_img_size = img_size
        if out_after_downsample:
            raise ValueError('out_after_downsample=True is not supported: ELSA-Swin returns '
                             'each stage\'s output before its patch merging (False)')
        if interpolate_mode is not None and interpolate_mode not in (
                'nearest', 'linear', 'bilinear', 'bicubic', 'trilinear', 'area',
                'nearest-exact'):
            raise ValueError(f'interpolate_mode must be a torch interpolation mode, got '
                             f'{interpolate_mode!r}')
        if norm_eval is not None and not isinstance(norm_eval, bool):
            raise ValueError(f'norm_eval must be a bool, got {norm_eval!r}')
        stages = stage_cfgs if isinstance(stage_cfgs, (list, tuple)) else [stage_cfgs]
        if any(c for c in stages):
            raise ValueError(f'stage_cfgs={stage_cfgs!r} is not supported: ELSA-Swin\'s stages '
                             f'are set by its own arguments (window_size, mlp_ratio, '
                             f'elsa_kernel_size, ...); only empty dicts are accepted')
        if patch_cfg:
            raise ValueError(f'patch_cfg={patch_cfg!r} is not supported: the patch embedding is '
                             f'set by patch_size, in_channels and patch_norm; only an empty '
                             f'dict is accepted')
        return pretrain_img_size

    @classmethod
    def _resolve_arch(cls, arch, embed_dims, depths, num_heads, group_width):
        given = dict(embed_dims=embed_dims, depths=depths, num_heads=num_heads,
                     group_width=group_width)
        if arch is not None:
            if not isinstance(arch, str) or \
                    cls._arch_alias.get(arch.lower(), arch.lower()) not in cls.arch_zoo:
                raise ValueError(f'arch must be one of {sorted(cls.arch_zoo)} or None, '
                                 f'got {arch!r}')
            preset = cls.arch_zoo[cls._arch_alias.get(arch.lower(), arch.lower())]
            for name, value in given.items():
                if value is None:
                    continue
                v = tuple(value) if isinstance(value, (list, tuple)) else value
                if v != preset[name]:
                    raise ValueError(f'{name}={value!r} conflicts with arch={arch!r} '
                                     f'({name}={preset[name]!r}); give one or the other')
            return (preset['embed_dims'], preset['depths'], preset['num_heads'],
                    preset['group_width'])
        default = cls.arch_zoo[cls._default_arch]
        embed_dims = default['embed_dims'] if embed_dims is None else embed_dims
        depths = tuple(default['depths'] if depths is None else depths)
        num_heads = tuple(default['num_heads'] if num_heads is None else num_heads)
        if group_width is None:
            # A Swin config for one of the official variants gets that variant's group width,
            # so that e.g. a Swin-T config swapped to ELSA-Swin matches the ELSA-T checkpoint.
            group_width = 8
            for preset in cls.arch_zoo.values():
                if (embed_dims, depths, num_heads) == (preset['embed_dims'], preset['depths'],
                                                       preset['num_heads']):
                    group_width = preset['group_width']
        return int(embed_dims), depths, num_heads, int(group_width)

    @staticmethod
    def _check_args(num_layers, num_heads, pretrain_img_size, patch_size, strides, out_indices,
                    use_abs_pos_embed, frozen_stages, window_size, elsa_stages, embed_dims,
                    in_channels, mlp_ratio):
        if num_layers < 1:
            raise ValueError('depths must name at least one stage')
        if len(num_heads) != num_layers:
            raise ValueError(f'num_heads ({len(num_heads)} entries) must have one entry per '
                             f'stage in depths ({num_layers})')
        for i, g in enumerate(num_heads):
            if g < 1 or (embed_dims * 2**i) % g:
                raise ValueError(f'num_heads[{i}]={g} must divide the stage width '
                                 f'{embed_dims * 2**i}')
        if embed_dims < 1 or in_channels < 1 or mlp_ratio <= 0:
            raise ValueError('embed_dims, in_channels and mlp_ratio must be positive')
        if isinstance(pretrain_img_size, (tuple, list)) and len(pretrain_img_size) not in (1, 2):
            raise ValueError(f'pretrain_img_size must be an int or have length 1 or 2, got '
                             f'{pretrain_img_size!r}')
        ps = to_2tuple(patch_size)
        if len(ps) != 2 or ps[0] != ps[1] or not isinstance(ps[0], int) or ps[0] < 1:
            raise ValueError(f'patch_size must be a positive int (square patches), got '
                             f'{patch_size!r}')
        if use_abs_pos_embed:
            patch_grid(pretrain_img_size, ps[0])
        expected = (ps[0], ) + (2, ) * (num_layers - 1)
        if tuple(strides) != expected:
            raise ValueError(f'strides={tuple(strides)!r} is not supported: ELSA-Swin embeds '
                             f'non-overlapping patches (strides[0] == patch_size) and merges '
                             f'2x2 patches between stages, i.e. strides={expected!r}')
        if isinstance(out_indices, int):
            out_indices = (out_indices, )
        out_indices = tuple(int(i) for i in out_indices)
        for i in out_indices:
            if not 0 <= i < num_layers:
                raise ValueError(f'out_indices: stage {i} does not exist (0..{num_layers - 1})')
        if len(set(out_indices)) != len(out_indices):
            raise ValueError(f'out_indices has duplicates: {out_indices}')
        if not -1 <= frozen_stages <= num_layers:
            raise ValueError(f'frozen_stages must be in [-1, {num_layers}], got '
                             f'{frozen_stages}')
        if window_size < 1:
            raise ValueError(f'window_size must be >= 1, got {window_size}')
        for i in elsa_stages:
            if not 0 <= i < num_layers:
                raise ValueError(f'elsa_stages: stage {i} does not exist '
                                 f'(0..{num_layers - 1})')
        return out_indices

    # ------------------------------------------------------------------ init / weights
    def _init_default_weights(self):
        """Linear: truncated normal (std .02), zero bias; LayerNorm: ones/zeros. ``rb`` and the
        ghost heads are initialised by their modules (trunc normal .02 / standard normal),
        ``absolute_pos_embed`` (if any) by trunc normal .02 as in mmdet's Swin; the conv
        mixers' convolutions and BatchNorms keep PyTorch's (DDFPack its own)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, WindowAttention):
                trunc_normal_(m.rb, std=.02)
            elif isinstance(m, ELSAAttention):
                m.reset_ghost_head()
        if self.use_abs_pos_embed:
            trunc_normal_(self.absolute_pos_embed, std=.02)

    def _pretrained_cfg(self):
        cfgs = self.init_cfg if isinstance(self.init_cfg, (list, tuple)) else [self.init_cfg]
        pretrained = [c for c in cfgs if c is not None and c.get('type') == 'Pretrained']
        others = [c for c in cfgs if c is not None and c.get('type') != 'Pretrained']
        if len(pretrained) > 1:
            raise ValueError('init_cfg: at most one Pretrained entry')
        return (pretrained[0] if pretrained else None), others

    def init_weights(self):
        """Default initialisation, then ``init_cfg``: a ``Pretrained`` checkpoint is loaded
        through the official-checkpoint conversion (missing/unexpected keys are logged);
        other initialisers go through mmengine."""
        pretrained, others = self._pretrained_cfg()
        self._init_default_weights()
        if others:
            from mmengine.model import initialize
            initialize(self, others)
        if pretrained is not None:
            if 'checkpoint' not in pretrained:
                raise ValueError('init_cfg Pretrained needs a "checkpoint"')
            ckpt = source = pretrained['checkpoint']
            prefix = pretrained.get('prefix')
            if prefix:
                from ..checkpoint import read_checkpoint
                from .official_weights import unwrap_state_dict
                sd = unwrap_state_dict(read_checkpoint(ckpt))
                prefix = prefix if prefix.endswith('.') else prefix + '.'
                ckpt = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
            load_official_weights(self, ckpt, source=str(source),
                                  allow_partial=bool(pretrained.get('allow_partial', False)))
        else:
            print_log(f'No pre-trained weights for {self.__class__.__name__}, training from '
                      f'scratch', logger='current', level=logging.INFO)
        self._is_init = True

    # ------------------------------------------------------------------ freezing
    def train(self, mode=True):
        """Switch mode, keeping the frozen stages (and, with ``norm_eval``, the BatchNorms)
        in eval mode."""
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def _freeze_stages(self):
        if self.frozen_stages >= 0:
            self.patch_embed.eval()
            self.drop_after_pos.eval()
            for p in self.patch_embed.parameters():
                p.requires_grad = False
            if self.use_abs_pos_embed:
                self.absolute_pos_embed.requires_grad = False
        for i in range(1, self.frozen_stages + 1):
            modules = [self.layers[i - 1]]
            if (i - 1) in self.out_indices:
                modules.append(getattr(self, f'norm{i - 1}'))
            for m in modules:
                m.eval()
                for p in m.parameters():
                    p.requires_grad = False

    # ------------------------------------------------------------------ forward
    def _abs_pos_embed(self, grid):
        """The embedding as (1, h, w, C) for a patch grid (h, w); refused for another grid."""
        h, w = grid
        if (h, w) != self.abs_pos_grid:
            raise ValueError(
                f'use_abs_pos_embed: the input gives a {h}x{w} patch grid, but the absolute '
                f'position embedding has {self.abs_pos_grid[0]}x{self.abs_pos_grid[1]} '
                f'(pretrain_img_size // patch_size); feed inputs of that size or build the '
                f'model with pretrain_img_size = the input size')
        return self.absolute_pos_embed.view(1, h, w, -1)

    def embed_patches(self, x):
        """(B, in_channels, H, W) -> the first stage's input tokens, (B, h, w, C): patch
        embedding, absolute position embedding if any, dropout."""
        if x.dim() != 4:
            raise ValueError(f'expected a (B, C, H, W) input, got shape {tuple(x.shape)}')
        x = self.patch_embed(x)
        if self.use_abs_pos_embed:
            x = x + self._abs_pos_embed(x.shape[1:3])
        return self.drop_after_pos(x)

    def forward(self, x):
        """x: (B, in_channels, H, W) -> tuple of (B, C_i, H_i, W_i) for i in out_indices.

        A tuple, as OpenMMLab backbones return it: mmpretrain's necks (GlobalAveragePooling)
        accept nothing else; mmdet's and mmseg's necks and heads index it like a list."""
        x = self.embed_patches(x)
        outs = []
        for i, layer in enumerate(self.layers):
            out, x = layer(x)
            if i in self.out_indices:
                out = getattr(self, f'norm{i}')(out)
                outs.append(out.permute(0, 3, 1, 2).contiguous())
        return tuple(outs)


# The Swin layers the backbone is built from belong to this module's interface too (imported
# from .swin_layers), so code that takes them from the backbone's module finds them here.
__all__ = ['ELSASwinTransformer', 'ELSABlock', 'SwinBlock', 'WindowAttention', 'PatchEmbed',
           'PatchMerging', 'ELSASwinStage', 'relative_position_index']
