"""Which checkpoints are trusted: by their content, never by a name that something else can take.

A trusted file is read with a full unpickle and keeps its config text; every other file passes
the gate (:mod:`mmelsa.checkpoint.gate`). ``MMELSA_TRUSTED_CHECKPOINTS`` lists entries separated
by ``os.pathsep``:

* ``sha256:<64 hex digits>``: the file whose bytes have that digest, wherever it is and however it
  was reached (local path, URL, any mmengine scheme). ``--trust-checkpoint FILE`` adds this entry
  and prints it.
* an absolute path: the file found there when this process first reads the trust list. Its
  device, inode and digest are recorded then, and a file read later is trusted only if the opened
  file has that device, inode and digest: a file swapped in at that path, or the same file
  changed, is not. A relative entry is an error (it would name another file in another folder).
* an exact ``http://`` / ``https://`` URL: the bytes downloaded from that URL (they are cached
  under a folder of their own per URL, see :func:`mmelsa.checkpoint.reading.cached_path`).
"""
import hashlib
import os
import os.path as osp
import re

from .errors import CheckpointError

__all__ = ['TRUST_ENV', 'TrustListError', 'TrustList', 'trust_list', 'file_digest',
           'trust_checkpoint']

TRUST_ENV = 'MMELSA_TRUSTED_CHECKPOINTS'
_DIGEST = re.compile(r'^[0-9a-f]{64}$')
_JOINED = ('sha256', 'http', 'https')  # entries whose own ':' is not a separator
#: path entry -> (device, inode, digest) of the file it named when first seen (this process)
_recorded = {}


class TrustListError(CheckpointError, ValueError):
    """An entry of ``MMELSA_TRUSTED_CHECKPOINTS`` that cannot be checked."""


def _entries(text):
    """Split the variable at ``os.pathsep``, keeping ``sha256:`` and URLs whole on POSIX."""
    parts = text.split(os.pathsep)
    entries, i = [], 0
    while i < len(parts):
        part = parts[i].strip()
        if os.pathsep == ':' and part.lower() in _JOINED and i + 1 < len(parts):
            part, i = f'{part}:{parts[i + 1].strip()}', i + 1
        if part:
            entries.append(part)
        i += 1
    return entries


class TrustList:
    """The parsed trust list: digests, absolute paths and exact URLs."""

    def __init__(self, text):
        self.digests, self.paths, self.urls = set(), [], set()
        for entry in _entries(text):
            if entry.lower().startswith('sha256:'):
                digest = entry[7:].lower()
                if not _DIGEST.match(digest):
                    raise TrustListError(
                        f'{TRUST_ENV}: {entry!r} is not sha256: followed by 64 hex digits')
                self.digests.add(digest)
            elif entry.startswith(('http://', 'https://')):
                self.urls.add(entry)
            elif '://' in entry:
                raise TrustListError(
                    f'{TRUST_ENV}: {entry!r} cannot be trusted by its name (only http(s) URLs '
                    f'can); trust its content instead: sha256:<digest>')
            else:
                path = osp.expanduser(entry)
                if not osp.isabs(path):
                    raise TrustListError(
                        f'{TRUST_ENV}: {entry!r} is a relative path; give its absolute path '
                        f'({osp.abspath(path)}) or its digest (sha256:<hex>, printed by '
                        f'--trust-checkpoint)')
                self.paths.append(osp.normpath(path))
                _record(self.paths[-1])

    def trusts(self, digest, opened=None, url=None):
        """Whether the bytes with ``digest`` are trusted; ``opened`` is the ``os.stat_result``
        of the file they were read from (when local), ``url`` the exact URL they came from."""
        if digest in self.digests or (url is not None and url in self.urls):
            return True
        if opened is None:
            return False
        return any(_recorded.get(path) == (opened.st_dev, opened.st_ino, digest)
                   for path in self.paths)


def _record(path):
    """The first time this process sees the path entry ``path``: the device, inode and digest
    of the file there, which is then the one file the entry trusts."""
    if path in _recorded:
        return
    try:
        with open(path, 'rb') as f:
            opened = os.fstat(f.fileno())
            sha = hashlib.sha256()
            for block in iter(lambda: f.read(1 << 22), b''):
                sha.update(block)
    except OSError:
        return  # nothing there yet: recorded when a file first appears
    _recorded[path] = (opened.st_dev, opened.st_ino, sha.hexdigest())


def trust_list():
    """The trust list of the environment as it is now."""
    return TrustList(os.environ.get(TRUST_ENV, ''))


def file_digest(path):
    """sha256 hex digest of a local file's bytes."""
    sha = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 22), b''):
            sha.update(block)
    return sha.hexdigest()


def trust_checkpoint(source):
    """Trust ``source`` in this process and those it starts (workers, ranks): a local file by its
    digest (returned, and the caller prints it), an http(s) URL by its exact text."""
    source = str(source)
    if source.startswith(('http://', 'https://')):
        entry = source
    else:
        path = osp.abspath(osp.expanduser(source))
        if not osp.isfile(path):
            raise FileNotFoundError(f'--trust-checkpoint {source}: no such file')
        entry = f'sha256:{file_digest(path)}'
    listed = os.environ.get(TRUST_ENV, '')
    os.environ[TRUST_ENV] = f'{listed}{os.pathsep}{entry}' if listed else entry
    return entry
