"""Whatever passes the gate is plain data with no config text and a bounded size.

Two generators feed :func:`mmelsa.checkpoint.load_bytes` with untrusted bytes:

* object trees saved by ``torch.save``, mixing what real checkpoints hold (state dicts, optimizer
  states, mmengine's message hub with HistoryBuffers, config text) with what hostile files hold
  (numpy strings and structured scalars where config text sits, str / dict subclasses, expanded
  and meta tensors, sets, bytearrays, shared lists), sometimes with a member of the zip compressed;
* raw pickles written opcode by opcode from the allowlisted globals (and a few others), with
  random arguments, persistent storage records and containers, wrapped in a torch zip.

The gate must either refuse with a :class:`CheckpointError` whose message is one line naming the
file, or return plain data (exact container and leaf types, dense CPU tensors no larger than their
storage, HistoryBuffers only in the message hub's ``log_scalars``), without config text other
than a ``gpu_ids`` line, visiting at most ``MAX_NODES`` values, with all tensor bytes within the
file's size.
"""
import collections
import io
import struct
import zipfile

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mmelsa  # noqa: F401
from mmelsa.checkpoint import CheckpointError, load_bytes
from mmelsa.checkpoint.config_text import CONFIG_TEXT_KEYS, gpu_ids_line
from mmelsa.checkpoint.plain import MAX_NODES
from mmelsa.checkpoint.unpickle import allowed_globals

SOURCE = 'fuzzed.pth'
CODE = "open('/nonexistent/ran', 'w')\ngpu_ids = [0]\n"


class StrSubclass(str):
    pass


class DictSubclass(dict):
    pass


def _structured(text):
    dt = np.dtype([('k', 'U16'), ('v', 'U64')])
    return np.array([('config', text)], dtype=dt)[0]


def _history_buffer(values):
    from mmengine.logging import HistoryBuffer
    return HistoryBuffer(list(values), [1] * len(values))


tensors = st.builds(
    lambda shape, dtype, view: _view(torch.zeros(shape, dtype=dtype), view),
    st.lists(st.integers(0, 4), max_size=3),
    st.sampled_from([torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.bool,
                     torch.uint8]),
    st.sampled_from(['plain', 'slice', 'transpose', 'param'] * 3 + ['expand', 'meta']))


def _view(t, how):
    if how == 'slice' and t.dim() and t.shape[0] > 1:
        return t[1:]
    if how == 'transpose' and t.dim() > 1:
        return t.transpose(0, 1)
    if how == 'expand':
        return torch.zeros(1, dtype=t.dtype).expand(1000)
    if how == 'meta':
        return torch.empty(t.shape, dtype=t.dtype, device='meta')
    if how == 'param' and t.dtype.is_floating_point:
        return torch.nn.Parameter(t)
    return t


hostile_leaves = st.one_of(
    st.text(max_size=8).map(StrSubclass),
    st.text(max_size=8).map(np.str_),
    st.just(CODE).map(_structured),
    st.integers(0, 64).map(bytearray),
    st.frozensets(st.integers(0, 3), max_size=2).map(set),
    st.binary(max_size=8),
    st.just(np.arange(3.0)),
)
plain_leaves = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
    st.text(max_size=12), st.just(CODE), tensors,
    st.sampled_from([np.float64(1.5), np.int64(3), np.bool_(True), np.float32(2.0)]))
# one draw in six is hostile, so that most trees hold some and many pass whole
leaves = st.one_of(*[plain_leaves] * 5, hostile_leaves)
keys = st.one_of(st.sampled_from(['cfg', 'config', 'state_dict', 'meta', 'message_hub',
                                  'runtime_info', 'log_scalars', 'w']),
                 st.text(max_size=6), st.integers(0, 5))


def _containers(children):
    plain = [st.lists(children, max_size=4), st.lists(children, max_size=3).map(tuple),
             st.dictionaries(keys, children, max_size=4),
             st.dictionaries(st.text(max_size=4), children,
                             max_size=3).map(collections.OrderedDict)]
    return st.one_of(*plain, *plain,
                     st.dictionaries(st.text(max_size=4), children, max_size=2).map(DictSubclass))


trees = st.recursive(leaves, _containers, max_leaves=25)


@st.composite
def checkpoints(draw):
    """A checkpoint of mmengine's layout whose every part may be replaced by a random tree."""
    ckpt = {
        'state_dict': collections.OrderedDict(w=torch.randn(2, 3), b=torch.zeros(3)),
        'meta': {'cfg': CODE, 'config': CODE, 'epoch': 1},
        'message_hub': {'log_scalars': {'train/loss': _history_buffer([0.5, 0.25])},
                        'runtime_info': {'cfg': CODE, 'iter': 2}, 'resumed_keys': {}},
    }
    for _ in range(draw(st.integers(0, 4))):
        path = draw(st.sampled_from([('meta', ), ('meta', 'cfg'), ('meta', 'config'),
                                     ('message_hub', ), ('message_hub', 'runtime_info'),
                                     ('message_hub', 'runtime_info', 'cfg'),
                                     ('message_hub', 'log_scalars', 'x'), ('state_dict', 'w'),
                                     ('extra', )]))
        holder = ckpt
        for key in path[:-1]:
            holder = holder.setdefault(key, {}) if isinstance(holder, dict) else {}
        if isinstance(holder, dict):
            holder[path[-1]] = draw(trees)
    if draw(st.integers(0, 3)) == 0:
        shared = []
        for _ in range(draw(st.integers(1, 40))):
            shared = [shared, shared]
        ckpt['chain'] = shared
    return ckpt


def _saved(obj, compress_member):
    buf = io.BytesIO()
    torch.save(obj, buf)
    if not compress_member:
        return buf.getvalue()
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, 'w') as dst:
        for i, info in enumerate(src.infolist()):
            dst.writestr(info, src.read(info), zipfile.ZIP_DEFLATED if i == 0 else
                         zipfile.ZIP_STORED)
    return out.getvalue()


def _assert_plain(obj, path, budget):
    budget[0] += 1
    assert budget[0] <= MAX_NODES, 'visited more values than the bound'
    kind = type(obj)
    if kind in (bool, int, float, str, type(None)):
        return
    if kind is torch.Tensor:
        assert obj.layout == torch.strided and obj.device.type == 'cpu', path
        assert obj.numel() * obj.element_size() <= obj.untyped_storage().nbytes(), path
        storage = obj.untyped_storage()
        budget[1][storage.data_ptr()] = storage.nbytes()
        return
    if kind in (dict, collections.OrderedDict):
        for k, v in obj.items():
            assert type(k) in (str, int), (path, k)
            _assert_plain(v, (*path, k), budget)
        return
    if kind in (list, tuple):
        for i, v in enumerate(obj):
            _assert_plain(v, (*path, i), budget)
        return
    from mmengine.logging import HistoryBuffer
    assert kind is HistoryBuffer and path[:2] == ('message_hub', 'log_scalars'), (path, kind)
    logs, counts = obj._log_history, obj._count_history
    assert type(logs) is np.ndarray and logs.dtype.kind in 'biuf' and logs.dtype.fields is None
    assert type(counts) is np.ndarray and counts.dtype.kind in 'biuf'


def _assert_no_config_text(obj):
    for keys in CONFIG_TEXT_KEYS:
        holder = obj
        for key in keys[:-1]:
            holder = holder.get(key) if isinstance(holder, dict) else None
        if isinstance(holder, dict) and keys[-1] in holder:
            assert type(holder[keys[-1]]) is str and holder[keys[-1]] == gpu_ids_line(
                holder[keys[-1]]), (keys, holder[keys[-1]])


def _check_gate(data):
    try:
        loaded = load_bytes(data, SOURCE, trusted=False)
    except CheckpointError as err:
        message = str(err)
        assert SOURCE in message and '\n' not in message, message
        return None
    budget = [0, {}]
    _assert_plain(loaded, (), budget)
    _assert_no_config_text(loaded)
    assert sum(budget[1].values()) <= len(data), 'tensors hold more bytes than the file'
    return loaded


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(checkpoints(), st.sampled_from([False, False, False, True]))
def test_saved_trees_pass_only_as_plain_data(ckpt, compress_member):
    _check_gate(_saved(ckpt, compress_member))


# ---------------------------------------------------------------- raw pickles, opcode by opcode
_GLOBALS = sorted(allowed_globals()) + ['builtins.bytearray', 'builtins.set', 'posix.system',
                                        'builtins.eval', 'torch._utils._rebuild_qtensor',
                                        'numpy.core.multiarray._reconstruct']


def _string(text):
    data = text.encode()
    return b'X' + struct.pack('<I', len(data)) + data


#: opcodes that consume everything back to the last MARK
_CLOSES_MARK = {'tuple': b't', 'list': b'l', 'dict': b'd', 'setitems': b'u', 'appends': b'e'}


@st.composite
def opcodes(draw):
    """A protocol-2 pickle body: pushes, containers, globals called with random arguments."""
    out = [b'\x80\x02']
    depth = 0
    for _ in range(draw(st.integers(1, 60))):
        op = draw(st.sampled_from(['int', 'str', 'none', 'mark', 'tuple', 'list', 'dict',
                                   'global', 'reduce', 'build', 'persid', 'setitems',
                                   'appends', 'bigint', 'bytes', 'empty_tuple']))
        if op == 'int':
            out.append(b'J' + struct.pack('<i', draw(st.integers(-2**31, 2**31 - 1))))
        elif op == 'bigint':
            out.append(b'\x8a\x08' + struct.pack('<q', draw(st.integers(-2**63, 2**63 - 1))))
        elif op == 'str':
            out.append(_string(draw(st.sampled_from(['storage', '0', '1', 'cpu', 'f8', 'U3',
                                                     'latin1', 'cfg', 'config', 'mean', 'V8',
                                                     CODE]))))
        elif op == 'bytes':
            out.append(b'C' + bytes([n := draw(st.integers(0, 16))]) + b'\x00' * n)
        elif op == 'none':
            out.append(b'N')
        elif op == 'mark':
            out.append(b'(')
            depth += 1
        elif op in _CLOSES_MARK and depth:
            out.append(_CLOSES_MARK[op])
            depth -= 1
        elif op == 'empty_tuple':
            out.append(b')')
        elif op == 'global':
            module, _, name = draw(st.sampled_from(_GLOBALS)).rpartition('.')
            out.append(b'c' + module.encode() + b'\n' + name.encode() + b'\n')
        elif op == 'reduce':
            out.append(b'R')
        elif op == 'build':
            out.append(b'b')
        elif op == 'persid':
            out.append(b'Q')
    out.append(b'.')
    return b''.join(out)


def _torch_zip(pickled, storages):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, 'w', zipfile.ZIP_STORED) as z:
        z.writestr('archive/data.pkl', pickled)
        for key, size in storages.items():
            z.writestr(f'archive/data/{key}', b'\x01' * size)
    return buf.getvalue()


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(opcodes(), st.dictionaries(st.sampled_from(['0', '1']), st.integers(0, 64), max_size=2))
def test_random_pickles_of_the_allowed_globals_pass_only_as_plain_data(pickled, storages):
    _check_gate(_torch_zip(pickled, storages))


def test_the_generators_reach_both_outcomes():
    """A planted-bug check for the property tests above: a real checkpoint passes and a pickle
    calling a refused global is refused (so neither test passes by refusing everything)."""
    ckpt = {'state_dict': {'w': torch.ones(2)}, 'meta': {'cfg': CODE}}
    loaded = _check_gate(_saved(ckpt, False))
    assert loaded is not None and 'cfg' not in loaded['meta']
    assert _check_gate(_torch_zip(b'\x80\x02cposix\nsystem\n' + _string('id') + b'\x85R.',
                                  {})) is None
    with pytest.raises(AssertionError):
        _assert_plain({'meta': np.str_('x')}, (), [0, {}])
    with pytest.raises(AssertionError):
        _assert_no_config_text({'meta': {'config': CODE}})
