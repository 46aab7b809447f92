"""Export forms of the ELSA operator (``torch.ops.mmelsa.elsa_forward``) and of the fused
softmax + ELSA operator (``torch.ops.mmelsa.elsa_softmax_forward``).

ONNX Runtime has no ELSA kernel, so an exported graph must spell the operator in standard ops.
Two forms do:

* the band form (:mod:`mmelsa.ops.onnx_bands`): the neighbourhood sum over tiles of the map as
  Gathers and two batched MatMuls. It needs the attention shared by a head's channels, so it
  serves every call without a multiplicative ghost at stride 1 (all of ELSA-Swin's), and is
  then the default: ELSA-Swin-T's graph has a few nodes per call instead of hundreds, ONNX
  Runtime runs it several times faster and the dynamo exporter traces it in seconds
  (docs/benchmarks.md, "ONNX Runtime: the band form" and "ONNX Runtime: tiles").
* the tap form, for every call (and the only one for a multiplicative ghost, DDF's per-sample
  channel filter, or a stride). For zero padding p = (K // 2) * d the graph is

    xp      = Pad(x, p)                                 viewed as (B, G, C/G, H + 2p, W + 2p)
    tap t   = (u, v):  x_t = xp[..., u*d : u*d + H : s, v*d : v*d + W : s]   (B, G, C/G, Ho, Wo)
    out     = sum_t x_t * ghost_mul[:, t] * attn[:, :, t]  (attention broadcast over a head's
              C/G channels)  +  depthwise Conv(x, ghost_add) (K x K, dilation d, stride s)

(the fused operator's softmax over the taps is spelt ``e = Exp(logits - ReduceMax)``, the sum
taken with ``e`` and divided by ``ReduceSum(e)`` once at the end: no Softmax over a non-last
axis, which ONNX Runtime runs as Transpose, Softmax, Transpose). The additive ghost does not
depend on the attention, so its term is exactly a depth-wise convolution and costs one Conv
instead of K*K extra multiply-adds. Only tap-sized temporaries exist besides the accumulator:
nothing of size K*K x the output is materialised.

ONNX Runtime runs one node at a time over whole tensors, so a tap loop over the whole map
streams it from memory K*K times. The tap form therefore runs the tap loop over
channel chunks (a slice of a head, or a run of whole heads) whose padded planes fit a core's L2
cache at the traced size, each at least a quarter of the channels (rounded to those shapes: 3 to
6 chunks at ELSA-Swin-T's stages); with the softmax written as above, this took
ELSA-Swin-T in ONNX Runtime from 1.75x to 1.53x Swin-T's time at 224 x 224 and from 2.42x to
1.89x at 512 x 512 (2 CPU threads; docs/benchmarks.md, "ELSA-Swin-T against mmdet's Swin-T").
The chunking changes the graph, never the result: the graph is correct at every input size.

Two spellings of that graph:

* :func:`elsa_export_form`, either form in plain torch ops. :func:`mmelsa.ops.elsa_attention`
  computes itself this way whenever a model is being exported (``torch.onnx.export`` with
  either exporter, ``torch.export``), so a bare ``torch.onnx.export(model, ...)`` works at
  any opset >= 11 with dynamic batch, height and width, without any registration. The tap
  slices use constant bounds counted from both ends of the padded map (``u*d`` and
  ``-(2p - u*d)``), so they hold no shape arithmetic; the band form computes its indices from
  the input's shape in the graph.
* The translations of the raw operators (the tap form), for graphs that call
  ``torch.ops.mmelsa.*`` directly rather than through :func:`mmelsa.ops.elsa_attention`:

  * ``torch.onnx.export(..., dynamo=True, custom_translation_table=custom_translation_table())``
  * ``torch.onnx.export(..., dynamo=False)`` after :func:`register_legacy_symbolic` (or
    :func:`custom_translation_table`, which registers it too), opset >= 15.

  Their slice ends are ``shape(x)[2:] + offset``, computed in the graph; only K, dilation,
  stride and the channel count C are fixed at export.
"""
import warnings

import torch

from .extension import require_ext
from .onnx_bands import additive_ghost_conv, band_form_applies, elsa_band_form

__all__ = ['ONNX_OPSET', 'is_exporting', 'elsa_export_form', 'custom_translation_table',
           'register_legacy_symbolic', 'elsa_forward_onnxscript',
           'elsa_softmax_forward_onnxscript']

# Opset of the raw operators' translations: Pad with inputs (>= 11), Shape with start/end
# (>= 15); onnxscript's opset18. The torch-op form exports at any opset >= 11.
ONNX_OPSET = 18


def is_exporting():
    """Whether a model is being exported: ``torch.onnx.export`` (the TorchScript exporter sets
    ``is_in_onnx_export``) or ``torch.export`` (which the dynamo exporter runs)."""
    return torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting()


# Channels per chunk of the export form: the padded map of a chunk is sized to stay in a core's
# L2 cache while its K*K taps pass over it (ONNX Runtime runs each node to completion, so an
# unchunked map streams from memory K*K times), and at least 1/_MIN_CHUNK_SHARE of the channels:
# more chunks multiply the graph's nodes (export and session time) for no measured gain.
# _chunks then rounds a chunk to whole heads or to equal slices of one, so a call can have more
# than _MIN_CHUNK_SHARE chunks (6 at ELSA-Swin-T's stages 1 and 2); capping them at 4 there
# made the exports 26-32% quicker and ONNX Runtime 4-9% slower, so it is not done. Measured on
# ELSA-Swin-T at 224 and 512 (docs/benchmarks.md, "ELSA-Swin-T against mmdet's Swin-T").
_CHUNK_BYTES = 256 * 1024
_MIN_CHUNK_SHARE = 4
_DEFAULT_CHUNK_CHANNELS = 32  # when the traced sizes are unknown


def _static_size(x):
    """x's sizes as ints: exact where they are static, the example input's size where
    torch.export holds them symbolic (a hint that adds no guard), None where neither is known.
    Read to size the chunks only, never used in the graph. The TorchScript exporter traces
    sizes as tensors, so its warning that such a value is fixed does not apply here."""
    sizes = []
    for v in x.shape:
        if isinstance(v, torch.Tensor):
            with warnings.catch_warnings():
                warnings.simplefilter('ignore', torch.jit.TracerWarning)
                v = int(v)
        elif isinstance(v, torch.SymInt):
            try:
                from torch.fx.experimental.symbolic_shapes import optimization_hint
                v = optimization_hint(v)
            except Exception:  # no hint (or an older torch): the default chunk size
                v = None
        sizes.append(v if isinstance(v, int) else None)
    return sizes


def _chunk_channels(sizes, pad, item_bytes):
    """Channels per chunk for x of traced sizes (B, C, H, W) (:func:`_static_size`)."""
    _, channels, height, width = sizes
    if channels is None or height is None or width is None:
        return _DEFAULT_CHUNK_CHANNELS
    plane = (height + 2 * pad) * (width + 2 * pad) * item_bytes
    return max(1, _CHUNK_BYTES // plane, -(-channels // _MIN_CHUNK_SHARE))


def _chunks(heads, per_head, size):
    """(head range, channel range within a head) of each chunk: runs of whole heads when
    ``size`` covers at least one head, else a head cut into equal slices of at most ``size``."""
    if size >= per_head:
        step = size // per_head
        return [((g, min(g + step, heads)), (0, per_head)) for g in range(0, heads, step)]
    parts = -(-per_head // size)
    bounds = [per_head * i // parts for i in range(parts + 1)]
    return [((g, g + 1), (c0, c1)) for g in range(heads) for c0, c1 in zip(bounds, bounds[1:])]


def _cat(parts, dim):
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim)


def elsa_export_form(x, attn, ghost_mul=None, ghost_add=None, kernel_size=7, dilation=1,
                     stride=1, attn_is_logits=False, chunk_channels=None, form=None):
    """The ELSA operator in plain torch ops; same arguments and result as
    :func:`mmelsa.ops.elsa_attention` (inputs already validated). Used when exporting.

    ``form``: 'bands' (:mod:`mmelsa.ops.onnx_bands`: Gathers and two MatMuls; only without a
    multiplicative ghost, at stride 1, with no per-sample additive ghost), 'taps' (Pad,
    strided slices, Mul / Add, one depth-wise conv, as the module docstring writes it; every
    call), or None: the bands where they apply and no ``chunk_channels`` is given (a chunk
    size is the tap form's), else the taps.

    x (B, C, H, W), attn (B, G, K*K, Ho, Wo) (logits when ``attn_is_logits``), ghosts
    (C, K, K), (B, C, K, K) (one per sample, DDF's channel filter) or None -> (B, C, Ho, Wo).
    A per-sample additive ghost is added tap by tap (a depth-wise convolution's weights cannot
    vary with a dynamic batch).

    For speed in ONNX Runtime, the taps run over the channels in chunks of ``chunk_channels``
    (default: sized to the cache at the traced size; any size gives the same result), and
    logits are normalised after the sum: ``sum_t x_t e_t / sum_t e_t`` with
    ``e = exp(logits - max)``, which needs no Softmax over a non-last axis (unless a
    per-sample additive ghost, which the normalisation must not scale, is present).
    """
    K, d, s = kernel_size, dilation, stride
    # C and G are fixed by the model's weights: plain ints even while tracing
    sizes = _static_size(x)
    channels, heads = sizes[1], _static_size(attn)[1]
    if form not in (None, 'taps', 'bands'):
        raise ValueError(f"form must be None, 'taps' or 'bands', got {form!r}")
    bands = band_form_applies(ghost_mul, ghost_add, stride)
    if form == 'bands' and not bands:
        raise ValueError("form='bands' needs stride 1, no ghost_mul and no per-sample ghost_add")
    if form == 'bands' or (form is None and bands and chunk_channels is None):
        return elsa_band_form(x, attn, heads, ghost_add, K, d, attn_is_logits)
    per_head = channels // heads
    pad = (K // 2) * d
    tap_add = ghost_add if ghost_add is not None and ghost_add.dim() == 4 else None
    deferred = attn_is_logits and tap_add is None
    # Dense NCHW inputs first (no-ops in an ONNX graph): torch.export cannot reason about the
    # strides of elementwise results of channels-last views (attn is a 1x1 conv's
    # channels-last output; x a channel slice of one) with a symbolic width.
    x, attn = x.contiguous(), attn.contiguous()
    norm = None
    if deferred:
        attn = (attn - attn.amax(2, keepdim=True)).exp()
        norm = attn.sum(2, keepdim=True)  # (B, G, 1, Ho, Wo)
    elif attn_is_logits:
        attn = attn.softmax(2)
    xp = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    # (B, C, Hp, Wp) -> (B, G, C/G, Hp, Wp): a tap's attention then broadcasts over a head.
    xp = xp.reshape(xp.shape[0], heads, per_head, xp.shape[2], xp.shape[3])

    def by_tap(ghost):  # (C, K, K) -> (G, C/G, K*K, 1, 1); (B, C, K, K) -> (B, G, C/G, ...)
        return ghost.reshape(ghost.shape[:-3] + (heads, per_head, K * K, 1, 1))

    if ghost_mul is not None:  # tap t's channel multipliers
        ghost_mul = by_tap(ghost_mul)
    if tap_add is not None:
        tap_add = by_tap(tap_add)
    size = chunk_channels or _chunk_channels(sizes, pad, x.element_size())
    # per head range: its taps' attention, (B, g1 - g0, 1, Ho, Wo) each, shared by the range's
    # chunks; and the chunks' outputs
    by_heads = {}
    for (g0, g1), (c0, c1) in _chunks(heads, per_head, size):
        if (g0, g1) not in by_heads:
            by_heads[(g0, g1)] = (attn[:, g0:g1].split(1, 2), [])
        taps, outs = by_heads[(g0, g1)]
        x_chunk = xp[:, g0:g1, c0:c1]
        total = None
        for u in range(K):
            rows = slice(u * d, u * d - 2 * pad or None, s)  # u*d : u*d + H : s
            for v in range(K):
                t = u * K + v
                x_tap = x_chunk[..., rows, v * d:v * d - 2 * pad or None:s]
                weight = taps[t]
                if ghost_mul is not None:
                    weight = weight * ghost_mul[..., g0:g1, c0:c1, t, :, :]
                if tap_add is not None:
                    weight = weight + tap_add[..., g0:g1, c0:c1, t, :, :]
                term = x_tap * weight
                total = term if total is None else total + term
        outs.append(total)
    total = _cat([_cat(outs, 2) for _, outs in by_heads.values()], 1)  # (B, G, C/G, Ho, Wo)
    if norm is not None:
        total = total / norm
    out = total.reshape(total.shape[0], channels, total.shape[3], total.shape[4])
    if ghost_add is not None and tap_add is None:
        out = out + additive_ghost_conv(x, ghost_add, channels, K, d, s)
    return out


_LEGACY_OPSET_MIN = 15


class _OnnxscriptEmitter:
    """Emits nodes through onnxscript (the dynamo exporter traces the calls)."""

    def __init__(self):
        import onnxscript
        self._op = onnxscript.opset18

    def __call__(self, name, *inputs, **attrs):
        return getattr(self._op, name)(*inputs, **attrs)

    def ints(self, values):
        return self._op.Constant(value_ints=list(values))

    @staticmethod
    def static_dim(value, axis):
        shape = getattr(value, 'shape', None)
        dim = None if shape is None else shape[axis]
        return dim if isinstance(dim, int) else None

    @staticmethod
    def rank(value):
        shape = getattr(value, 'shape', None)
        return None if shape is None else len(shape)


class _TorchScriptEmitter:
    """Emits nodes into the legacy (TorchScript) exporter's graph context ``g``."""

    def __init__(self, g):
        self._g = g

    def __call__(self, name, *inputs, **attrs):
        # every attribute used here is an int or a list of ints: the '_i' suffix
        return self._g.op(name, *inputs, **{k + '_i': v for k, v in attrs.items()})

    def ints(self, values):
        return self._g.op('Constant', value_t=torch.tensor(list(values), dtype=torch.int64))

    @staticmethod
    def static_dim(value, axis):
        sizes = value.type().sizes() if value.type().kind() == 'TensorType' else None
        return sizes[axis] if sizes and isinstance(sizes[axis], int) else None

    @staticmethod
    def rank(value):
        return value.type().dim() if value.type().kind() == 'TensorType' else None


def _build_elsa_graph(emit, x, attn, ghost_mul, ghost_add, kernel_size, dilation, stride):
    """The ELSA graph described in the module docstring; returns the (B, C, Ho, Wo) value.

    x (B, C, H, W), attn (B, G, K*K, Ho, Wo), ghosts (C, K, K) or None.
    """
    for name, ghost in (('ghost_mul', ghost_mul), ('ghost_add', ghost_add)):
        if ghost is not None and emit.rank(ghost) not in (3, None):
            raise RuntimeError(
                'ELSA ONNX export: the raw operator\'s translation takes %s of shape (C, K, K) '
                'only; per-sample ghosts (B, C, K, K) export through mmelsa.ops.elsa_attention '
                'or mmelsa.ops.ddf, whose export form covers them' % name)
    K, d, s = kernel_size, dilation, stride
    pad = (K // 2) * d
    xp = emit('Pad', x, emit.ints([0, 0, pad, pad, 0, 0, pad, pad]))
    # (B, C, Hp, Wp) -> (B, G, C/G, Hp, Wp): a tap's attention then broadcasts over a head.
    heads = emit('Shape', attn, start=1, end=2)
    grouped = emit('Concat', emit('Shape', xp, start=0, end=1), heads, emit.ints([-1]),
                   emit('Shape', xp, start=2, end=4), axis=0)
    xp = emit('Reshape', xp, grouped)
    height_width = emit('Shape', x, start=2, end=4)
    tap_axes, tap_steps = emit.ints([3, 4]), emit.ints([s, s])
    if ghost_mul is not None:
        # (C, K, K) -> (K*K, G, C/G, 1, 1): tap t's multiplier for every channel of every head
        by_head = emit('Concat', heads, emit.ints([-1, K * K]), axis=0)
        ghost_mul = emit('Transpose', emit('Reshape', ghost_mul, by_head), perm=[2, 0, 1])
        ghost_mul = emit('Unsqueeze', ghost_mul, emit.ints([3, 4]))

    total = None
    for u in range(K):
        for v in range(K):
            t = u * K + v
            begin = emit.ints([u * d, v * d])
            x_tap = emit('Slice', xp, begin, emit('Add', height_width, begin), tap_axes,
                         tap_steps)  # (B, G, C/G, Ho, Wo)
            if ghost_mul is not None:
                x_tap = emit('Mul', x_tap, emit('Gather', ghost_mul, emit.ints([t]), axis=0))
            attn_tap = emit('Slice', attn, emit.ints([t]), emit.ints([t + 1]),
                            emit.ints([2]))  # (B, G, 1, Ho, Wo)
            term = emit('Mul', x_tap, attn_tap)
            total = term if total is None else emit('Add', total, term)

    merged = emit('Concat', emit('Shape', total, start=0, end=1), emit.ints([-1]),
                  emit('Shape', total, start=3, end=5), axis=0)
    out = emit('Reshape', total, merged)
    if ghost_add is not None:
        channels = emit.static_dim(ghost_add, 0)
        if channels is None:
            raise RuntimeError('ELSA ONNX export: the channel count of ghost_add must be known '
                               'at export time (it is a parameter of shape (C, K, K))')
        weight = emit('Unsqueeze', ghost_add, emit.ints([1]))  # (C, 1, K, K)
        out = emit('Add', out, emit('Conv', x, weight, group=channels, kernel_shape=[K, K],
                                    pads=[pad] * 4, dilations=[d, d], strides=[s, s]))
    return out


def elsa_forward_onnxscript(x, attn, ghost_mul=None, ghost_add=None, kernel_size=7,
                            dilation=1, stride=1):
    """onnxscript translation of ``mmelsa::elsa_forward`` for the dynamo exporter."""
    return _build_elsa_graph(_OnnxscriptEmitter(), x, attn, ghost_mul, ghost_add,
                             kernel_size, dilation, stride)


def elsa_softmax_forward_onnxscript(x, logits, ghost_mul=None, ghost_add=None, kernel_size=7,
                                    dilation=1, stride=1):
    """onnxscript translation of the fused ``mmelsa::elsa_softmax_forward``: ONNX Softmax over
    the taps (axis 2, in the model's dtype), then the graph of the plain operator."""
    emit = _OnnxscriptEmitter()
    return _build_elsa_graph(emit, x, emit('Softmax', logits, axis=2), ghost_mul, ghost_add,
                             kernel_size, dilation, stride)


def _elsa_forward_symbolic(g, x, attn, ghost_mul, ghost_add, kernel_size, dilation, stride,
                           softmax=False):
    from torch.onnx import symbolic_helper as sh
    k, d, s = (sh._get_const(v, 'i', name)
               for v, name in ((kernel_size, 'kernel_size'), (dilation, 'dilation'),
                               (stride, 'stride')))
    ghost_mul = None if sh._is_none(ghost_mul) else ghost_mul
    ghost_add = None if sh._is_none(ghost_add) else ghost_add
    emit = _TorchScriptEmitter(g)
    if softmax:
        attn = emit('Softmax', attn, axis=2)
    return _build_elsa_graph(emit, x, attn, ghost_mul, ghost_add, k, d, s)


def _elsa_softmax_forward_symbolic(g, x, logits, ghost_mul, ghost_add, kernel_size, dilation,
                                   stride):
    return _elsa_forward_symbolic(g, x, logits, ghost_mul, ghost_add, kernel_size, dilation,
                                  stride, softmax=True)


_registered = False


def register_legacy_symbolic():
    """Teach the TorchScript exporter (``dynamo=False``) ``mmelsa::elsa_forward``; idempotent.
    Export with ``opset_version >= 15`` (:data:`ONNX_OPSET` recommended)."""
    global _registered
    if not _registered:
        torch.onnx.register_custom_op_symbolic('mmelsa::elsa_forward', _elsa_forward_symbolic,
                                               _LEGACY_OPSET_MIN)
        torch.onnx.register_custom_op_symbolic('mmelsa::elsa_softmax_forward',
                                               _elsa_softmax_forward_symbolic, _LEGACY_OPSET_MIN)
        _registered = True


def custom_translation_table():
    """``{op: translation}`` for the plain and the fused (softmax) ELSA operators, for
    ``torch.onnx.export(...,
    dynamo=True, custom_translation_table=...)``. Also registers the legacy symbolic."""
    require_ext('mmelsa.ops.onnx.custom_translation_table')
    register_legacy_symbolic()
    return {torch.ops.mmelsa.elsa_forward.default: elsa_forward_onnxscript,
            torch.ops.mmelsa.elsa_softmax_forward.default: elsa_softmax_forward_onnxscript}
