"""mmpretrain's VisionTransformer (ViT, DeiT) with the scaled-ReLU convolutional stem in place
of its patchify patch embedding (``type='ConvStemVisionTransformer'``; needs mmpretrain)."""
from mmpretrain.models.backbones import VisionTransformer

from .conv_stem import ConvStem

__all__ = ['ConvStemVisionTransformer']


class ConvStemVisionTransformer(VisionTransformer):
    """mmpretrain's ``VisionTransformer`` whose ``patch_embed`` is a :class:`ConvStem` of the
    same patch size and width.

    Args:
        conv_stem (dict): :class:`ConvStem` arguments besides the widths and patch size (``{}``:
            the paper's stem, 7x7 stride 2 -> 3x3 -> 3x3 at 64 channels with BatchNorm + ReLU,
            then a projection of kernel = stride = patch_size / 2).
        Others: as mmpretrain's ``VisionTransformer`` (``arch``, ``img_size``, ``patch_size``,
            ``in_channels``, ...).

    Input (B, C, H, W); outputs as mmpretrain's ``VisionTransformer`` (the token grid is the
    patch embedding's, H / patch_size).
    """

    def __init__(self, arch='base', img_size=224, patch_size=16, in_channels=3, conv_stem=None,
                 **kwargs):
        super().__init__(arch=arch, img_size=img_size, patch_size=patch_size,
                         in_channels=in_channels, **kwargs)
        stem = ConvStem(in_channels, self.embed_dims, patch_size, **(conv_stem or {}))
        # read by mmpretrain when it resizes a loaded position embedding
        stem.init_out_size = self.patch_resolution
        self.patch_embed = stem
