"""ELSA models: the ELSA module and the ELSA-Swin backbone."""
from .elsa_attention import ELSAAttention
from .elsa_swin import (ELSABlock, ELSASwinStage, ELSASwinTransformer, PatchEmbed,
                        PatchMerging, SwinBlock, WindowAttention)
from .official_weights import (convert_backbone_state_dict, convert_model_state_dict,
                               load_official_weights)

__all__ = [
    'ELSAAttention', 'ELSABlock', 'SwinBlock', 'WindowAttention', 'PatchEmbed', 'PatchMerging',
    'ELSASwinStage', 'ELSASwinTransformer', 'convert_backbone_state_dict',
    'convert_model_state_dict', 'load_official_weights'
]
