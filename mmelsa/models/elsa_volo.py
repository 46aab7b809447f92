"""ELSA-VOLO: VOLO (Vision Outlooker, arXiv 2106.13112) with ELSA in place of outlook attention.

The network is timm's ``VOLO`` (``timm.models.volo``) as it is: the convolutional stem, the
Outlooker stage at 1/8 resolution, the Transformer stages at 1/16, the class-attention post
network and the class token. Only the token mixer of the Outlooker blocks changes: each
``OutlookAttention`` becomes an :class:`~mmelsa.models.elsa_attention.ELSAAttention`, which takes
and returns the same channels-last (B, H, W, C) map, so the block around it (norms, MLP, drop
path, residuals) is VOLO's. The choices made for the ELSA module (kernel size, heads, stride,
ghost head) and why are in configs/elsa_volo/README.md.

Used as an mmpretrain backbone: the output is the class token after VOLO's final norm, the
input of a ``LinearClsHead``. VOLO's token-labelling auxiliary head is not built (see the
README).

This module needs timm; ``import mmelsa`` does not import it (mmelsa.registry registers
``ELSAVOLO`` as a builder that does). The timm internals it relies on are pinned by the digest of
their source (:mod:`.timm_pins`), checked each time an ELSA-VOLO is built.
"""
import torch.nn as nn
from timm.layers import trunc_normal_
from timm.models.volo import VOLO, Outlooker

from .elsa_attention import ELSAAttention
from .timm_pins import check_timm_sources


class ELSAVOLO(VOLO):
    """ELSA-VOLO-D1..D5 backbone (timm's VOLO with ELSA in its Outlooker blocks).

    Args:
        arch (str): 'd1' .. 'd5': VOLO's depths, widths, heads, MLP ratio and stem width.
        img_size (int): Training resolution; fixes the size of VOLO's position embedding (the
            input must have this size). Default: 224.
        in_channels (int): Input channels. Default: 3.
        drop_path_rate (float): Stochastic depth of the Transformer stages (VOLO applies none
            in the Outlooker stage). Default: 0.
        attn_drop_rate (float): Attention dropout of every block. Default: 0.
        elsa_kernel_size (int): ELSA neighbourhood K. Default: 3 (VOLO's outlook kernel).
        group_width (int): Channels per group of ELSA's KxK convolution. Default: 8.
        lam (float): ELSA's multiplicative ghost exponent (0: none). Default: 0.
        gamma (float): ELSA's additive ghost weight (0: none). Default: 1.
        init_cfg: Accepted for mmengine configs; only None is supported (no pretrained
            ELSA-VOLO weights exist).

    Shape:
        - Input: (B, in_channels, img_size, img_size)
        - Output: a 1-tuple with the class token (B, C_last) after the final norm
    """

    arch_zoo = {
        'd1': dict(layers=(4, 4, 8, 2), embed_dims=(192, 384, 384, 384),
                   num_heads=(6, 12, 12, 12), mlp_ratio=3., stem_hidden_dim=64),
        'd2': dict(layers=(6, 4, 10, 4), embed_dims=(256, 512, 512, 512),
                   num_heads=(8, 16, 16, 16), mlp_ratio=3., stem_hidden_dim=64),
        'd3': dict(layers=(8, 8, 16, 4), embed_dims=(256, 512, 512, 512),
                   num_heads=(8, 16, 16, 16), mlp_ratio=3., stem_hidden_dim=64),
        'd4': dict(layers=(8, 8, 16, 4), embed_dims=(384, 768, 768, 768),
                   num_heads=(12, 16, 16, 16), mlp_ratio=3., stem_hidden_dim=64),
        'd5': dict(layers=(12, 12, 20, 4), embed_dims=(384, 768, 768, 768),
                   num_heads=(12, 16, 16, 16), mlp_ratio=4., stem_hidden_dim=128),
    }

    def __init__(self, arch='d1', img_size=224, in_channels=3, drop_path_rate=0.,
                 attn_drop_rate=0., elsa_kernel_size=3, group_width=8, lam=0., gamma=1.,
                 init_cfg=None):
        check_timm_sources()
        if not isinstance(arch, str) or arch.lower() not in self.arch_zoo:
            raise ValueError(f'arch must be one of {sorted(self.arch_zoo)}, got {arch!r}')
        if init_cfg is not None:
            raise ValueError('ELSAVOLO: init_cfg is not supported (no pretrained ELSA-VOLO '
                             f'weights exist; load a checkpoint with load_from), got {init_cfg!r}')
        preset = self.arch_zoo[arch.lower()]
        # num_classes=0: no classifier and no token-labelling head; the mmpretrain head
        # classifies the class token this backbone returns.
        super().__init__(img_size=img_size, in_chans=in_channels, num_classes=0,
                         drop_path_rate=drop_path_rate, attn_drop_rate=attn_drop_rate,
                         use_aux_head=False, **preset)
        self.arch = arch.lower()
        for block in self.outlooker_blocks():
            outlook = block.attn
            # VOLO's outlook attention has no bias on its value projection (qkv_bias=False);
            # the ELSA pre-projection that makes q, k and v follows it.
            block.attn = ELSAAttention(
                outlook.v.in_features, outlook.num_heads, kernel_size=elsa_kernel_size,
                group_width=group_width, lam=lam, gamma=gamma,
                qkv_bias=outlook.v.bias is not None, attn_drop=attn_drop_rate,
                proj_drop=outlook.proj_drop.p)
            block.attn.apply(self._init_linear)

    @staticmethod
    def _init_linear(m):
        """VOLO's initialisation of Linear layers (truncated normal .02, zero bias)."""
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def outlooker_blocks(self):
        """The Outlooker blocks (VOLO's first stage), in order."""
        return [m for m in self.network.modules() if isinstance(m, Outlooker)]

    def init_weights(self):
        """Weights are initialised at construction (VOLO's scheme); kept for mmengine."""

    def forward(self, x):
        """x: (B, C_in, img_size, img_size) -> (class token (B, C_last), )."""
        return (self.forward_head(self.forward_features(x), pre_logits=True), )


__all__ = ['ELSAVOLO']
