"""Native operators of mmelsa (the ELSA aggregation), see csrc/ for the kernels."""
from .functional import ELSAAttentionOp, channels_last_path, elsa_attention
from .flops import elsa_op_flops
from .info import info

__all__ = ['elsa_attention', 'ELSAAttentionOp', 'channels_last_path', 'elsa_op_flops', 'info']
