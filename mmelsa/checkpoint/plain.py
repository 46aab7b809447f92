"""What an untrusted checkpoint may hold once unpickled: plain data, checked and copied.

:func:`to_plain` walks what :mod:`mmelsa.checkpoint.unpickle` built and returns a copy made of
``dict`` / ``OrderedDict`` / ``list`` / ``tuple`` (keys ``str`` or ``int``), real dense CPU tensors
and Python ``bool`` / ``int`` / ``float`` / ``str`` / ``None``. Numeric numpy scalars become the
Python numbers they are. mmengine's own objects pass only where mmengine writes them: a
``HistoryBuffer`` as a value of ``message_hub['log_scalars']``, rebuilt from its numeric arrays.
Anything else, anywhere (numpy strings, structured or object scalars and arrays, subclasses of
``str`` or ``dict``, meta, sparse or quantized tensors, views larger than their storage, bytes), is
refused with one line naming the file and the key path. Because every container is a plain copy,
no value can pose as a dict or a string (``'config' in meta`` means a key), and the config-text
removal that follows sees every place text can be.

The walk is bounded: at most :data:`MAX_NODES` values visited (a pickle can make a list hold the
same list twice, thirty times over, and a walk or a copy would then take 2**30 steps) and at most
:data:`MAX_DEPTH` levels.
"""
import collections

import torch

from .errors import CheckpointTooLargeError, UnsafeCheckpointError
from .unpickle import PendingArray, Refused, RefusedObject

__all__ = ['MAX_NODES', 'MAX_DEPTH', 'PLAIN_TYPES', 'to_plain', 'key_path']

#: values visited (shared values count each time they are reached)
MAX_NODES = 1_000_000
MAX_DEPTH = 64
#: the leaf types of plain data
PLAIN_TYPES = (bool, int, float, str, type(None))
_KEY_TYPES = (str, int)
_DTYPES = {torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32,
           torch.int16, torch.int8, torch.uint8, torch.bool, torch.complex64, torch.complex128}
#: where mmengine writes HistoryBuffers: message_hub['log_scalars'][name]
_HISTORY_PLACE = ('message_hub', 'log_scalars')


def key_path(path):
    """``['meta']['cfg']`` for ``('meta', 'cfg')``; ``the checkpoint`` for ``()``."""
    return ''.join(f'[{k!r}]' for k in path) or 'the checkpoint itself'


class _Walk:

    def __init__(self, source):
        self.source = source
        self.visited = 0

    def refuse(self, path, what):
        return UnsafeCheckpointError(
            f'refusing to load {self.source}: {key_path(path)} is {what}, not plain data '
            f'(dicts, lists, tuples, tensors, numbers, strings).')

    def value(self, obj, path):
        self.visited += 1
        if self.visited > MAX_NODES or len(path) > MAX_DEPTH:
            raise CheckpointTooLargeError(
                f'refusing to load {self.source}: it holds more than {MAX_NODES} values or '
                f'nests deeper than {MAX_DEPTH} (at {key_path(path[:8])}...); no checkpoint '
                f'does.')
        kind = type(obj)
        if kind in PLAIN_TYPES:
            return obj
        if kind is torch.Tensor:
            return self.tensor(obj, path)
        if kind in (dict, collections.OrderedDict):
            return self.mapping(obj, path)
        if kind in (list, tuple):
            return kind(self.value(v, (*path, i)) for i, v in enumerate(obj))
        number = _numpy_number(obj)
        if number is not None:
            return number
        if path[:-1] == _HISTORY_PLACE and _is_history_buffer(obj):
            return self.history_buffer(obj, path)
        if isinstance(obj, Refused):
            if obj.too_large:
                raise CheckpointTooLargeError(
                    f'refusing to load {self.source}: {key_path(path)} is {obj.what}.')
            raise self.refuse(path, obj.what)
        if isinstance(obj, RefusedObject) or (isinstance(obj, type)
                                              and issubclass(obj, RefusedObject)):
            raise UnsafeCheckpointError(
                f'refusing to load {self.source}: {key_path(path)} needs {obj.what}, which is '
                f'not plain data (unpickling it could run code from the file).')
        if kind is PendingArray:
            raise self.refuse(path, 'a numpy array')
        raise self.refuse(path, f'a {kind.__module__}.{kind.__qualname__}')

    def mapping(self, obj, path):
        out = type(obj)()
        for key, item in obj.items():
            if type(key) not in _KEY_TYPES:
                raise self.refuse((*path, key), f'under a key of type {type(key).__name__}')
            out[key] = self.value(item, (*path, key))
        # torch's state dicts carry their modules' versions here; load_state_dict reads it
        metadata = getattr(obj, '_metadata', None) if type(obj) is collections.OrderedDict \
            else None
        if metadata is not None:
            out._metadata = self.value(metadata, (*path, '_metadata'))
        return out

    def tensor(self, t, path):
        if t.layout != torch.strided or t.device.type != 'cpu' or t.is_quantized:
            raise self.refuse(path, f'a {t.layout} tensor on {t.device}')
        if t.dtype not in _DTYPES:
            raise self.refuse(path, f'a tensor of dtype {t.dtype}')
        if t.numel() * t.element_size() > t.untyped_storage().nbytes():
            raise CheckpointTooLargeError(
                f'refusing to load {self.source}: {key_path(path)} is a tensor of shape '
                f'{tuple(t.shape)} over a storage of {t.untyped_storage().nbytes()} bytes: it '
                f'declares more data than the file holds.')
        return t.detach() if t.requires_grad else t

    def history_buffer(self, buf, path):
        from mmengine.logging import HistoryBuffer
        state = vars(buf)
        arrays = [self.array(state.get(name), (*path, name))
                  for name in ('_log_history', '_count_history')]
        max_length = state.get('max_length')
        if type(max_length) is not int or max_length < 1 or len(arrays[0]) != len(arrays[1]):
            raise self.refuse(path, 'a HistoryBuffer with inconsistent fields')
        self.visited += len(arrays[0])
        return HistoryBuffer(*arrays, max_length)

    def array(self, pending, path):
        """A 1-d numeric numpy array from its pickled state ``(version, shape, dtype,
        is_fortran, raw bytes)``, or a refusal."""
        import numpy as np
        state = pending.state if type(pending) is PendingArray else None
        if not (type(state) is tuple and len(state) == 5):
            raise self.refuse(path, f'a {type(pending).__name__} (expected a numpy array)')
        _, shape, dtype, _, data = state
        if not (isinstance(dtype, np.dtype) and dtype.kind in 'biuf' and dtype.fields is None
                and type(shape) is tuple and len(shape) == 1 and type(shape[0]) is int
                and type(data) is bytes and len(data) == shape[0] * dtype.itemsize):
            raise self.refuse(path, 'a numpy array that is not a 1-d array of numbers')
        return np.frombuffer(data, dtype).copy()


def _numpy_number(obj):
    """The Python number of a numeric numpy scalar, else None."""
    module = type(obj).__module__
    if not module.startswith('numpy'):
        return None
    import numpy as np
    if isinstance(obj, np.generic) and obj.dtype.kind in 'biuf' and obj.dtype.fields is None \
            and type(obj).__module__ == 'numpy':
        return obj.item()
    return None


def _is_history_buffer(obj):
    try:
        from mmengine.logging import HistoryBuffer
    except ImportError:
        return False
    return type(obj) is HistoryBuffer


def to_plain(obj, source):
    """A plain-data copy of ``obj`` (see the module docstring); ``source`` names the file."""
    return _Walk(source).value(obj, ())
