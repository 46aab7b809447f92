"""mmelsa's models: the ELSA module and the ELSA-Swin backbone with its Swin layers; DDF's
layer (DDFResNet, built on mmpretrain, is in :mod:`mmelsa.models.ddf_resnet`)."""
from .conv_stem import ConvStem
from .ddf import DDFPack, FilterNorm
from .elsa_attention import ELSAAttention
from .elsa_swin import ELSABlock, ELSASwinStage, ELSASwinTransformer
from .official_weights import (convert_backbone_state_dict, convert_model_state_dict,
                               load_official_weights)
from .swin_layers import PatchEmbed, PatchMerging, SwinBlock, WindowAttention

__all__ = [
    'ELSAAttention', 'ELSABlock', 'SwinBlock', 'WindowAttention', 'PatchEmbed', 'PatchMerging',
    'ELSASwinStage', 'ELSASwinTransformer', 'convert_backbone_state_dict',
    'convert_model_state_dict', 'load_official_weights', 'DDFPack', 'FilterNorm',
    'ConvStem'
]
