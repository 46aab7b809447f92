"""The one place where checkpoint bytes become Python objects.

Every checkpoint mmelsa or mmengine reads (a local path, a URL, any ``CheckpointLoader`` scheme,
``torch.load`` called by a scheme's loader) arrives here as bytes that were read once, with their
sha256 digest, and with the trust decision made on those bytes (:mod:`mmelsa.checkpoint.trust`):

* trusted bytes are unpickled in full (``torch.load`` of those same bytes) and returned as they
  are, config text included;
* all other bytes go through the restricted unpickler (:mod:`mmelsa.checkpoint.unpickle`), are
  converted to plain data (:mod:`mmelsa.checkpoint.plain`) and lose their config text
  (:mod:`mmelsa.checkpoint.config_text`).

Nothing else in mmelsa unpickles a checkpoint, and what :func:`load_bytes` returns for untrusted
bytes is plain data whatever ``torch.load``'s defaults or environment variables say.
"""
import hashlib
import io

import torch

from .config_text import remove_config_text
from .errors import UnsafeCheckpointError
from .plain import to_plain
from .trust import TRUST_ENV
from .unpickle import unpickle_checkpoint

__all__ = ['digest_of', 'load_bytes']


def digest_of(data):
    """sha256 hex digest of checkpoint bytes."""
    return hashlib.sha256(data).hexdigest()


def _to_device(obj, device):
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        out = type(obj)((k, _to_device(v, device)) for k, v in obj.items())
        if hasattr(obj, '_metadata'):
            out._metadata = obj._metadata
        return out
    if type(obj) in (list, tuple):
        return type(obj)(_to_device(v, device) for v in obj)
    return obj


def load_bytes(data, source, trusted, map_location=None, digest=None):
    """The checkpoint in ``data`` (the bytes of ``source``, named in messages).

    ``map_location`` as ``torch.load`` takes it: for untrusted bytes a device (string or
    ``torch.device``) moves the tensors there; ``None``, ``'cpu'`` and callables keep them on the
    CPU, where mmengine's loaders move them to the model's device anyway. ``digest``: the bytes'
    sha256 when the caller already has it (hashing a large file is not free).
    """
    digest = digest or digest_of(data)
    if trusted:
        from mmengine.logging import print_log
        print_log(f'{source} is trusted (sha256 {digest[:16]}...): loading it with a '
                  f'full unpickle', logger='current')
        # torch.serialization.load: torch.load itself may be routed to this gate (engine)
        return torch.serialization.load(io.BytesIO(data), map_location=map_location,
                                        weights_only=False)
    try:
        checkpoint = to_plain(unpickle_checkpoint(data, source), source)
    except UnsafeCheckpointError as err:  # the opt-in, with the digest that trusts these bytes
        raise type(err)(
            f'{err} If you trust this file: --trust-checkpoint {source} (mmelsa\'s tools) or '
            f'{TRUST_ENV}=sha256:{digest}') from None
    checkpoint = remove_config_text(checkpoint, source, f'sha256:{digest}')
    device = _device(map_location)
    return checkpoint if device is None else _to_device(checkpoint, device)


def _device(map_location):
    """The non-CPU device ``map_location`` names, else None."""
    if not isinstance(map_location, (str, torch.device)):
        return None
    try:
        device = torch.device(map_location)
    except RuntimeError:
        return None
    return None if device.type == 'cpu' else device
