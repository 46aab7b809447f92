"""What the native extension was built with."""


def info() -> dict:
    """Return ``{'ext_loaded': bool, 'with_cuda': bool, 'cuda_version': str}``.

    ``cuda_version`` is the CUDA runtime the kernels were compiled against ('' without CUDA).
    """
    try:
        from .. import _ext
    except ImportError:
        return {'ext_loaded': False, 'with_cuda': False, 'cuda_version': ''}
    return {'ext_loaded': True, 'with_cuda': bool(_ext.with_cuda()),
            'cuda_version': str(_ext.cuda_version())}
