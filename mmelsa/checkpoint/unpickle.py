"""Bytes of a ``torch.save`` file -> Python objects, building nothing but what checkpoints hold.

This is the only unpickler that sees the bytes of a file nobody trusted. It does not call
``torch.load`` (whose behaviour an environment variable such as
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` can change): it reads PyTorch's zip format itself
(``docs/checkpoint_format.md``) and unpickles ``data.pkl`` with Python's unpickler restricted by
``find_class`` to :func:`allowed_globals`: containers, tensors rebuilt from the file's own storage
records, numpy's numeric arrays and scalars, and mmengine's ``HistoryBuffer``. Every callable a
pickle may reach is a checking stand-in that refuses arguments a ``torch.save`` never writes.

Resources are bounded before they are allocated: no compressed or encrypted zip members (a
DEFLATE member can expand a thousandfold), each storage exactly as large as its record in the file
(so all tensor bytes together are at most the file's size), tensor views no larger than their
storage (a stride-0 view declares any shape in a few bytes), and at most :data:`MAX_OPCODES`
pickle operations (each can create an object).

Nothing refused is built: a global outside the allowlist, or an allowed one called with
arguments ``torch.save`` never writes, unpickles as an inert :class:`Refused` object (calling it,
or setting its state, does nothing), and numpy arrays stay :class:`PendingArray` states. What
comes out is not yet plain data: :mod:`mmelsa.checkpoint.plain` walks it, refuses what is
``Refused`` naming the key path where it sits, and converts the rest.
"""
import codecs
import collections
import functools
import io
import pickle
import pickletools
import sys
import zipfile

import torch

from .errors import CheckpointTooLargeError, CorruptCheckpointError, UnsafeCheckpointError

__all__ = ['MAX_OPCODES', 'unpickle_checkpoint', 'allowed_globals', 'Refused',
           'RefusedObject', 'PendingArray']

#: pickle operations in ``data.pkl``; a real checkpoint has about 20 per tensor
MAX_OPCODES = 2_000_000
#: zip members; a real checkpoint has one per storage plus a few records
MAX_MEMBERS = 200_000


class _Refused(Exception):
    """A global or argument the restricted unpickler does not build."""


class _TooLarge(_Refused):
    """Data declared beyond what the file holds."""


class _Inert:
    """Takes what pickle does to an object it built (its state, items, appended values) and
    keeps none of it."""

    def __setstate__(self, state):
        pass

    def __setitem__(self, key, value):
        pass

    def append(self, value):
        pass

    def extend(self, values):
        pass


class Refused(_Inert):
    """A value the unpickler did not build (an allowed global called with arguments
    ``torch.save`` never writes); ``what`` says what it would have been."""

    def __init__(self, what, too_large=False):
        self.what, self.too_large = what, too_large

    def __call__(self, *args, **kwargs):
        return self


class RefusedObject(_Inert):
    """Base of the stand-ins for globals outside the allowlist: instantiating one (pickle's
    REDUCE / NEWOBJ) runs nothing and keeps no argument."""
    what = 'a refused global'
    too_large = False

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        pass


@functools.lru_cache(maxsize=None)
def _refused_global(name):
    return type('Refused', (RefusedObject, ), {'what': f'the global {name}'})


class PendingArray:
    """A numpy array as pickle describes it (``_reconstruct`` then ``BUILD`` with its state);
    made into an array only where plain data allows one (:mod:`mmelsa.checkpoint.plain`)."""
    state = None

    def __setstate__(self, state):
        self.state = state


def _or_refused(fn):
    """``fn`` as the unpickler calls it: a refusal becomes a :class:`Refused` value, so that
    the walk names where it sits."""

    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except _TooLarge as err:
            return Refused(str(err), too_large=True)
        except _Refused as err:
            return Refused(str(err))

    return call


class StorageType:
    """Stands in for ``torch.FloatStorage`` & co. in a storage record: names a dtype, builds
    nothing (a pickle that calls it, e.g. ``torch.FloatStorage(10**10)``, is refused)."""

    def __init__(self, name, dtype):
        self.name, self.dtype = name, dtype

    def __call__(self, *args, **kwargs):
        raise _Refused(f'a call of torch.{self.name}')


def _storage_types():
    types = {'Untyped': torch.uint8, 'Byte': torch.uint8, 'Double': torch.float64,
             'Float': torch.float32, 'Half': torch.float16, 'BFloat16': torch.bfloat16,
             'Long': torch.int64, 'Int': torch.int32, 'Short': torch.int16, 'Char': torch.int8,
             'Bool': torch.bool, 'ComplexFloat': torch.complex64,
             'ComplexDouble': torch.complex128}
    return {f'torch.{name}Storage': StorageType(f'{name}Storage', dtype)
            for name, dtype in types.items()}


#: a storage record's data: an untyped storage read from the file, its dtype and element count
_Storage = collections.namedtuple('_Storage', 'untyped dtype numel')


def _ints(values, what):
    if type(values) is not tuple or not all(type(v) is int and v >= 0 for v in values):
        raise _Refused(f'a tensor {what} that is not a tuple of non-negative ints')
    return values


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad, backward_hooks,
                    metadata=None):
    """``torch._utils._rebuild_tensor_v2``, for views that lie inside their storage and are no
    larger than it."""
    if type(storage) is not _Storage or type(storage_offset) is not int:
        raise _Refused('a tensor rebuilt from something other than a storage record')
    size, stride = _ints(size, 'size'), _ints(stride, 'stride')
    if len(size) != len(stride) or type(requires_grad) is not bool or backward_hooks or metadata:
        raise _Refused('tensor arguments that torch.save does not write')
    numel = 1
    for s in size:
        numel *= s
    extent = storage_offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1 if numel else 0
    if storage_offset < 0 or extent > storage.numel or numel > storage.numel:
        raise _TooLarge(
            f'a tensor of shape {tuple(size)} (strides {tuple(stride)}) over a storage of '
            f'{storage.numel} elements: it declares more data than the file holds')
    tensor = torch.empty(0, dtype=storage.dtype)
    tensor.set_(storage.untyped, storage_offset, size, stride)
    return tensor


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks,
                       dtype, metadata=None):
    if dtype is not storage.dtype:
        raise _Refused('a tensor whose dtype is not its storage\'s')
    return _rebuild_tensor(storage, storage_offset, size, stride, requires_grad, backward_hooks,
                           metadata)


def _rebuild_parameter(data, requires_grad, backward_hooks, state=None):
    """A Parameter comes back as its plain tensor: a checkpoint holds values, not modules."""
    if type(data) is not torch.Tensor or backward_hooks or state:
        raise _Refused('a Parameter with hooks or state')
    return data


def _codecs_encode(text, encoding='utf-8'):
    """How protocol-2 pickles write ``bytes``: ``_codecs.encode(str, 'latin1')``."""
    if type(text) is not str or encoding not in ('latin1', 'latin-1'):
        raise _Refused('_codecs.encode other than of a str to latin1')
    return codecs.encode(text, 'latin1')


def _numeric(dtype):
    import numpy as np
    return isinstance(dtype, np.dtype) and dtype.kind in 'biuf' and dtype.fields is None


class _NDARRAY:
    """Stands in for ``numpy.ndarray`` as the first argument of numpy's ``_reconstruct``."""


def _numpy_globals():
    import numpy as np

    def dtype(spec, align=False, copy=True):
        try:
            made = np.dtype(spec, bool(align), bool(copy)) if type(spec) is str else None
        except (TypeError, ValueError):
            made = None
        if not _numeric(made):
            raise _Refused(f'numpy.dtype({spec!r:.40})')
        return made

    def reconstruct(cls, shape, typecode):
        if cls is not _NDARRAY or shape != (0, ) or typecode != b'b':
            raise _Refused('numpy _reconstruct with arguments numpy never writes')
        return PendingArray()

    def scalar(dtype, data=None):
        if not _numeric(dtype) or type(data) is not bytes or len(data) != dtype.itemsize:
            raise _Refused(f'a numpy scalar of {getattr(dtype, "what", dtype)}')
        return np.frombuffer(data, dtype)[0]

    found = {'numpy.ndarray': _NDARRAY, 'numpy.dtype': dtype}
    for module in ('numpy._core.multiarray', 'numpy.core.multiarray'):
        found[f'{module}._reconstruct'] = reconstruct
        found[f'{module}.scalar'] = scalar
    return found


def _mmengine_globals():
    try:
        from mmengine.logging import HistoryBuffer
    except ImportError:
        return {}
    allowed = {'min', 'max', 'current', 'mean'} | set(HistoryBuffer._statistics_methods)

    def history_buffer_getattr(obj, name):
        # pickle writes the buffer's statistics methods as getattr(HistoryBuffer, 'mean')
        if obj is not HistoryBuffer or name not in allowed:
            raise _Refused(f'getattr({obj!r}, {name!r})')
        return getattr(obj, name)

    return {'mmengine.logging.history_buffer.HistoryBuffer': HistoryBuffer,
            'builtins.getattr': history_buffer_getattr}


@functools.lru_cache(maxsize=None)
def allowed_globals():
    """``'module.name'`` -> what the restricted unpickler builds for it."""
    found = {
        'collections.OrderedDict': collections.OrderedDict,
        'torch._utils._rebuild_tensor_v2': _rebuild_tensor,
        'torch._utils._rebuild_tensor_v3': _rebuild_tensor_v3,
        'torch._utils._rebuild_parameter': _rebuild_parameter,
        'torch._utils._rebuild_parameter_with_state': _rebuild_parameter,
        '_codecs.encode': _codecs_encode,
    }
    found.update(_numpy_globals())
    found.update(_mmengine_globals())
    found = {name: _or_refused(fn) if callable(fn) and not isinstance(fn, type) else fn
             for name, fn in found.items()}
    found.update(_storage_types())  # markers of persistent records: calling one raises
    return found


def _pickled_name(module, name):
    return name if module == 'builtins' else f'{module}.{name}'


class _Unpickler(pickle.Unpickler):

    def __init__(self, pickled, storage_bytes):
        super().__init__(io.BytesIO(pickled))
        self._storage_bytes = storage_bytes
        self._storages = {}

    def find_class(self, module, name):
        if module == '__builtin__':  # protocol 2 writes the builtins module's Python 2 name
            module = 'builtins'
        found = allowed_globals().get(f'{module}.{name}')
        return _refused_global(_pickled_name(module, name)) if found is None else found

    def persistent_load(self, pid):
        if (type(pid) is not tuple or len(pid) != 5 or pid[0] != 'storage'
                or not isinstance(pid[1], StorageType) or type(pid[2]) is not str
                or type(pid[4]) is not int):
            raise _Refused(f'a persistent record torch.save does not write ({pid!r:.80})')
        _, storage_type, key, _location, numel = pid
        if key not in self._storages:
            data = self._storage_bytes(key)
            itemsize = torch.empty(0, dtype=storage_type.dtype).element_size()
            if numel < 0 or numel * itemsize != len(data):
                raise _TooLarge(f'storage record {key} declares {numel} x {itemsize} bytes '
                                f'but the file holds {len(data)}')
            untyped = torch.frombuffer(bytearray(data), dtype=torch.uint8).untyped_storage() \
                if data else torch.UntypedStorage(0)
            self._storages[key] = _Storage(untyped, storage_type.dtype, numel)
        return self._storages[key]


def _count_opcodes(pickled, source):
    count = 0
    try:
        for _ in pickletools.genops(pickled):
            count += 1
            if count > MAX_OPCODES:
                raise CheckpointTooLargeError(
                    f'refusing to load {source}: its pickle holds more than {MAX_OPCODES} '
                    f'operations (no checkpoint has that many objects)')
    except (ValueError, EOFError) as err:
        raise CorruptCheckpointError(
            f'cannot read checkpoint file {source} (bad pickle: {err}): it is corrupt') from None


def _open_zip(data, source):
    if data[:3] == b'\x80\x02\x8a':
        raise UnsafeCheckpointError(
            f'refusing to load {source}: it is in the format of PyTorch before 1.6, which only a '
            f'full unpickle reads; trust it if you know where it comes from (see Safety in the '
            f'README)')
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, OSError) as err:
        raise CorruptCheckpointError(
            f'cannot read checkpoint file {source} ({err}): it is truncated, corrupt or not a '
            f'PyTorch checkpoint') from None
    members = archive.infolist()
    if len(members) > MAX_MEMBERS:
        raise CheckpointTooLargeError(f'refusing to load {source}: {len(members)} zip members')
    for info in members:
        if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
            raise CheckpointTooLargeError(
                f'refusing to load {source}: its member {info.filename} is compressed or '
                f'encrypted (torch.save stores members as they are; a compressed one can expand '
                f'far beyond the file)')
    pickles = [i.filename for i in members
               if i.filename.endswith('/data.pkl') and i.filename.count('/') == 1]
    if len(pickles) != 1:
        raise CorruptCheckpointError(
            f'cannot read checkpoint file {source}: not a PyTorch checkpoint (no single '
            f'<archive>/data.pkl)')
    return archive, pickles[0][:-len('data.pkl')]


def unpickle_checkpoint(data, source):
    """The objects a ``torch.save`` zip file in ``data`` holds (see the module docstring).

    Raises:
        UnsafeCheckpointError: a global or argument outside the allowlist; the message is one
            line naming ``source`` and what was refused.
        CheckpointTooLargeError: the file declares more than it holds.
        CorruptCheckpointError: not a readable PyTorch zip checkpoint.
    """
    archive, prefix = _open_zip(data, source)
    names = set(archive.namelist())
    if f'{prefix}byteorder' in names and \
            archive.read(f'{prefix}byteorder').decode(errors='replace') != sys.byteorder:
        raise CorruptCheckpointError(
            f'cannot read checkpoint file {source}: written on a machine of the other byte order')

    def storage_bytes(key):
        name = f'{prefix}data/{key}'
        if name not in names:
            raise CorruptCheckpointError(
                f'cannot read checkpoint file {source}: storage {key} is missing')
        return archive.read(name)

    try:
        pickled = archive.read(f'{prefix}data.pkl')
        _count_opcodes(pickled, source)
        return _Unpickler(pickled, storage_bytes).load()
    except _TooLarge as err:
        raise CheckpointTooLargeError(f'refusing to load {source}: {err}.') from None
    except _Refused as err:
        raise UnsafeCheckpointError(
            f'refusing to load {source}: it needs {err}, which is not plain data (unpickling '
            f'it could run code from the file).') from None
    except (zipfile.BadZipFile, pickle.UnpicklingError, EOFError, ValueError, TypeError,
            AttributeError, IndexError, KeyError, RuntimeError, OverflowError) as err:
        if isinstance(err, (UnsafeCheckpointError, CorruptCheckpointError)):
            raise
        raise CorruptCheckpointError(
            f'cannot read checkpoint file {source} ({type(err).__name__}: '
            f'{str(err).splitlines()[0] if str(err) else ""}): it is truncated, corrupt or not '
            f'a PyTorch checkpoint') from None
