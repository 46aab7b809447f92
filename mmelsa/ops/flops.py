"""The ELSA operator's cost for mmengine's complexity analysis.

mmengine's jit-tracing ``FlopAnalyzer`` / ``ActivationAnalyzer`` (behind
``mmengine.analysis.get_model_complexity_info`` and mmdet's / mmseg's ``get_flops.py``) only know
aten operators and would skip ``mmelsa::elsa_forward`` (and the fused
``mmelsa::elsa_softmax_forward``) with an "unsupported operator" warning.
:func:`register_complexity_handles` (installed with mmelsa's other mmengine changes,
:mod:`mmelsa.engine.patches`) adds it to both analyzers'
default handles. Counting follows fvcore's convention (one fused multiply-add = one FLOP):

    per output element (B * C * Ho * Wo of them):  K*K multiply-adds (the weighted sum)
                                                  + K*K for the ghost head when present
                                                    (ghost_mul * attn + ghost_add per tap)
"""
from collections import Counter

#: the traced name of the operator
ELSA_OP = 'mmelsa::elsa_forward'
#: the traced name of the fused softmax + ELSA operator (same arguments, logits for attn; its
#: softmax is not counted, as aten's softmax is not)
ELSA_SOFTMAX_OP = 'mmelsa::elsa_softmax_forward'
#: the key its FLOPs are filed under in ``FlopAnalyzer.by_operator()``
ELSA_KEY = 'elsa_attention'

__all__ = ['ELSA_OP', 'ELSA_SOFTMAX_OP', 'ELSA_KEY', 'elsa_flop_handle', 'elsa_op_flops',
           'register_complexity_handles']


def elsa_flop_handle(inputs, outputs):
    """FlopAnalyzer handle; the operator's arguments are (x, attn, ghost_mul, ghost_add,
    kernel_size, dilation, stride), attn being (B, G, K*K, Ho, Wo)."""
    from mmengine.analysis.jit_handles import get_shape
    out_shape = get_shape(outputs[0])
    kk = get_shape(inputs[1])[2]
    elems = 1
    for s in out_shape:
        elems *= s
    has_ghost = any(v.type().kind() != 'NoneType' for v in inputs[2:4])
    # A Counter with our own key: a bare number would be filed under the op's name with the
    # namespace stripped ('elsa_forward'), which is easy to confuse.
    return Counter({ELSA_KEY: elems * kk * (2 if has_ghost else 1)})


def elsa_op_flops(x_shape, kernel_size, stride=1, ghost=True):
    """Closed form of :func:`elsa_flop_handle`, for callers that know the call's shapes."""
    b, c, h, w = x_shape
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    return b * c * ho * wo * kernel_size**2 * (2 if ghost else 1)


def register_complexity_handles():
    """Make mmengine's analyzers count the ELSA operator (idempotent; no-op without mmengine)."""
    try:
        from mmengine.analysis import complexity_analysis
        from mmengine.analysis.jit_handles import generic_activation_jit
    except ImportError:
        return
    for op in (ELSA_OP, ELSA_SOFTMAX_OP):
        complexity_analysis._DEFAULT_SUPPORTED_FLOP_OPS[op] = elsa_flop_handle
        complexity_analysis._DEFAULT_SUPPORTED_ACT_OPS[op] = generic_activation_jit()
