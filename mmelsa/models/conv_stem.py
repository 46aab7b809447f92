"""The scaled-ReLU convolutional stem ("Scaled ReLU Matters for Training Vision Transformers",
arXiv 2109.03810): a few strided convolutions, each followed by BatchNorm and ReLU (the "scaled
ReLU"), then a projection convolution of kernel = stride to the embedding width, in place of a
ViT's single patchify convolution.

The default is the form third-party code attributes to the paper (no official code exists):
Conv 7x7 stride 2 (64 channels, no bias) -> BN -> ReLU -> Conv 3x3 -> BN -> ReLU -> Conv 3x3 ->
BN -> ReLU -> projection with kernel = stride = patch_size / 2; nothing after the projection.
``norm_cfg=None`` / ``act_cfg=None`` remove the BatchNorms / ReLUs (the paper's ablation
"convolutions without scaled ReLU"; the convolutions then carry a bias).
"""
import math

import torch.nn.functional as F
from torch import Tensor, nn

from .utils import SuggestsArguments, build_activation

__all__ = ['ConvStem']


def _build_bn(norm_cfg, channels):
    """BatchNorm from an mmcv-style config: ``dict(type='BN' | 'SyncBN', eps=..., momentum=...,
    requires_grad=...)``, or None for no norm."""
    if norm_cfg is None:
        return None
    cfg = dict(norm_cfg)
    kind = cfg.pop('type', None)
    layers = {'BN': nn.BatchNorm2d, 'BN2d': nn.BatchNorm2d, 'SyncBN': nn.SyncBatchNorm}
    if kind not in layers:
        raise ValueError(f'ConvStem: norm_cfg type must be one of {sorted(layers)} or '
                         f'norm_cfg=None, got {kind!r}')
    requires_grad = cfg.pop('requires_grad', True)
    layer = layers[kind](channels, **cfg)
    for p in layer.parameters():
        p.requires_grad = requires_grad
    return layer


class ConvStem(SuggestsArguments, nn.Module):
    """Convolutional stem with scaled ReLU; a drop-in for a patch embedding.

    Args:
        in_channels: image channels.
        embed_dims: width of the output tokens.
        patch_size: total stride (the tokens' grid is the input's / patch_size): the stem's
            convolutions' strides times the projection's stride.
        stem_channels: width of each stem convolution, e.g. (64, 64, 64).
        kernel_sizes: their kernels, e.g. (7, 3, 3) (odd; padding k // 2).
        strides: their strides, e.g. (2, 1, 1); their product must divide ``patch_size``.
        norm_cfg: the norm after each stem convolution (BatchNorm), None for none.
        act_cfg: the activation after it (ReLU), None for none.

    Input (B, C, H, W), padded right / bottom to a multiple of ``patch_size`` (as the ELSA / Swin
    patch embedding does). Output ``(tokens (B, Hp*Wp, embed_dims), (Hp, Wp))`` with
    Hp = ceil(H / patch_size), the form of mmpretrain's / mmdet's ``PatchEmbed``.
    """

    def __init__(self, in_channels=3, embed_dims=768, patch_size=16, stem_channels=(64, 64, 64),
                 kernel_sizes=(7, 3, 3), strides=(2, 1, 1), norm_cfg=dict(type='BN'),
                 act_cfg=dict(type='ReLU', inplace=True)):
        super().__init__()
        stem_channels, kernel_sizes, strides = (tuple(v) for v in (stem_channels, kernel_sizes,
                                                                   strides))
        if not len(stem_channels) == len(kernel_sizes) == len(strides):
            raise ValueError('ConvStem: stem_channels, kernel_sizes and strides must have one '
                             f'entry per convolution, got {stem_channels}, {kernel_sizes}, '
                             f'{strides}')
        if any(k < 1 or k % 2 == 0 for k in kernel_sizes):
            raise ValueError(f'ConvStem: kernel_sizes must be odd, got {kernel_sizes}')
        stem_stride = math.prod(strides)
        if patch_size % stem_stride:
            raise ValueError(f'ConvStem: the stem convolutions\' strides {strides} (product '
                             f'{stem_stride}) must divide patch_size {patch_size}')
        self.patch_size = patch_size
        layers, width = [], in_channels
        for c, k, s in zip(stem_channels, kernel_sizes, strides):
            norm = _build_bn(norm_cfg, c)
            layers.append(nn.Conv2d(width, c, k, stride=s, padding=k // 2, bias=norm is None))
            if norm is not None:
                layers.append(norm)
            if act_cfg is not None:
                layers.append(build_activation(act_cfg))
            width = c
        self.stem = nn.Sequential(*layers)
        proj = patch_size // stem_stride
        self.proj = nn.Conv2d(width, embed_dims, proj, stride=proj)

    def forward_map(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> the embedding map (B, embed_dims, Hp, Wp)."""
        H, W = x.shape[-2:]
        p = self.patch_size
        # padded to p * ceil(H / p), written without a branch so that torch.export and ONNX
        # keep H and W symbolic (a zero-width pad is a no-op)
        x = F.pad(x, (0, (W + p - 1) // p * p - W, 0, (H + p - 1) // p * p - H))
        return self.proj(self.stem(x))

    def forward(self, x: Tensor):
        x = self.forward_map(x)
        size = (x.shape[2], x.shape[3])
        return x.flatten(2).transpose(1, 2), size
