"""Native operators of mmelsa (the ELSA aggregation), see csrc/ for the kernels."""
from .elsa_attention import ELSAAttentionOp, elsa_attention
from .info import info

__all__ = ['elsa_attention', 'ELSAAttentionOp', 'info']
