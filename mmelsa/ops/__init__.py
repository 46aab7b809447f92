"""Native operators of mmelsa: the ELSA aggregation and DDF on it; csrc/ holds the kernels."""
from .functional import ELSAAttentionOp, channels_last_path, ddf, elsa_attention
from .flops import elsa_op_flops
from .extension import info

__all__ = [
    'elsa_attention', 'ddf', 'ELSAAttentionOp', 'channels_last_path', 'elsa_op_flops', 'info'
]
