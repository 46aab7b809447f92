"""Reading a checkpoint by its name: a local path, an http(s) URL, or any scheme mmengine knows.

A local file is opened once; its bytes are read once, hashed, judged by the trust list on the
opened file (:mod:`mmelsa.checkpoint.trust`) and handed to the gate (:mod:`mmelsa.checkpoint.gate`)
that turns them into objects. No second open, so nothing swapped in between (a symlink, a renamed
file) is read with another decision. An http(s) URL is downloaded once into a folder of its own
(:func:`cached_path`) and read the same way, trusted only when its exact URL or its digest is
listed.

Every reader of mmelsa ends here: the backbone's ``init_cfg=dict(type='Pretrained', ...)``,
``load_from``, ``tools/test.py CONFIG CKPT``, ``--resume``, the converters, the ONNX export, and
mmengine's own loaders once mmelsa is imported (:mod:`mmelsa.engine.loading`).
"""
import hashlib
import os
import os.path as osp
import stat

from .errors import CorruptCheckpointError
from .gate import digest_of, load_bytes
from .trust import trust_list

__all__ = ['read_checkpoint_file', 'read_checkpoint', 'read_checkpoint_bytes', 'is_trusted',
           'cached_path', 'download']


def _read_once(filename):
    """The bytes of ``filename`` and the ``os.stat_result`` of the file they were read from."""
    try:
        fd = os.open(filename, os.O_RDONLY)
    except FileNotFoundError:
        raise FileNotFoundError(f'checkpoint file {filename} does not exist') from None
    try:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode):
            raise CorruptCheckpointError(
                f'checkpoint {filename} is not a file (a folder, a device or a pipe)')
        f = os.fdopen(fd, 'rb')
    except BaseException:
        os.close(fd)
        raise
    with f:  # closes fd
        data = f.read()  # one allocation: the reader sizes it from fstat
    if not data:
        raise CorruptCheckpointError(
            f'checkpoint file {filename} is empty (0 bytes): its save was probably interrupted')
    return data, opened


def read_checkpoint_bytes(data, source, opened=None, url=None, map_location=None):
    """The checkpoint in ``data``: trusted when the trust list says so for these bytes (and the
    file ``opened`` / the exact ``url`` they came from), else plain data."""
    digest = digest_of(data)
    trusted = trust_list().trusts(digest, opened=opened, url=url)
    return load_bytes(data, source, trusted, map_location, digest=digest)


def read_checkpoint_file(filename, map_location=None, url=None, source=None):
    """Read a local checkpoint file (see the module docstring); ``source`` names it in messages
    (default: ``filename``).

    Raises:
        FileNotFoundError: no such file.
        UnsafeCheckpointError: the file holds more than plain data and is not trusted.
        CorruptCheckpointError: the file is empty, truncated or not a checkpoint.
        TrustListError: ``MMELSA_TRUSTED_CHECKPOINTS`` has an entry that cannot be checked.
    """
    filename = osp.expanduser(str(filename))
    data, opened = _read_once(filename)
    return read_checkpoint_bytes(data, source or filename, opened=opened, url=url,
                                 map_location=map_location)


def is_trusted(source):
    """Whether ``source`` (a local path or an http(s) URL) is trusted now. The gate decides again
    on the bytes it reads; this answers questions asked before a load (an Inferencer given
    weights alone)."""
    source = str(source)
    url = None
    if source.startswith(('http://', 'https://')):
        url, source = source, cached_path(source)
        if url in trust_list().urls:
            return True
    elif '://' in source:
        return False
    try:
        data, opened = _read_once(osp.expanduser(source))
    except (OSError, CorruptCheckpointError):
        return False
    return trust_list().trusts(digest_of(data), opened=opened, url=url)


def cached_path(url):
    """Where :func:`download` keeps ``url``: torch hub's checkpoint folder, in a folder named by
    the URL's digest (two URLs with the same file name never share a cached file)."""
    from urllib.parse import urlparse

    from torch.hub import get_dir
    tag = hashlib.sha256(url.encode()).hexdigest()[:16]
    return osp.join(get_dir(), 'checkpoints', 'mmelsa', tag, osp.basename(urlparse(url).path))


def download(url):
    """Download ``url`` once into its cache folder (rank 0 first when distributed) and return
    the local path."""
    from mmengine.dist import barrier, get_dist_info
    from mmengine.logging import print_log
    from torch.hub import download_url_to_file

    cached = cached_path(url)
    rank, world_size = get_dist_info()
    if rank == 0 and not osp.isfile(cached):
        os.makedirs(osp.dirname(cached), exist_ok=True)
        print_log(f'Downloading {url} to {cached}', logger='current')
        download_url_to_file(url, cached, progress=False)
    if world_size > 1:
        barrier()
    return cached


def read_checkpoint(filename, map_location=None):
    """A local path, an http(s) URL (cached, then read as a local file trusted by its URL), or
    any scheme mmengine's ``CheckpointLoader`` knows (its loaders read through the gate once
    mmelsa is imported)."""
    filename = str(filename)
    if filename.startswith(('http://', 'https://')):
        return read_checkpoint_file(download(filename), map_location, url=filename)
    if '://' not in filename:
        return read_checkpoint_file(filename, map_location)
    from mmengine.runner import CheckpointLoader
    return CheckpointLoader.load_checkpoint(filename, map_location=map_location)
