"""The one loader of the native extension ``mmelsa._ext`` (csrc/).

Importing the extension registers the operator schemas and their CPU / CUDA / autocast kernels
(``torch.ops.mmelsa.*``); :mod:`mmelsa.ops.registrations` then adds the fake kernels and the
autograd formulas. Every other module asks here, so the extension is imported once and a
missing build is reported the same way everywhere.
"""
try:
    from .. import _ext
    _EXT_ERROR = None
except ImportError as e:  # the extension was not built
    _ext = None
    _EXT_ERROR = e

__all__ = ['loaded', 'require_ext', 'info']


def loaded() -> bool:
    """Whether the native extension could be imported."""
    return _ext is not None


def require_ext(what: str = 'mmelsa.ops.elsa_attention'):
    """Return the extension module, or raise RuntimeError saying how to build it."""
    if _ext is None:
        raise RuntimeError(
            '%s needs the native extension mmelsa._ext, which could not be imported (%s). '
            'Build it with `pip install -e . --no-build-isolation` or `python setup.py '
            'build_ext --inplace` in the repository root.' % (what, _EXT_ERROR))
    return _ext


def info() -> dict:
    """Return ``{'ext_loaded': bool, 'with_cuda': bool, 'cuda_version': str}``.

    ``cuda_version`` is the CUDA runtime the kernels were compiled against ('' without CUDA).
    """
    if _ext is None:
        return {'ext_loaded': False, 'with_cuda': False, 'cuda_version': ''}
    return {'ext_loaded': True, 'with_cuda': bool(_ext.with_cuda()),
            'cuda_version': str(_ext.cuda_version())}
