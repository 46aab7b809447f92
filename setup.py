"""Build and install mmelsa.

The native extension ``mmelsa._ext`` is compiled from ``csrc/`` the way mmcv builds its ops:
the C++ (CPU) sources always, the CUDA sources as well when a GPU is visible to torch or when
``FORCE_CUDA=1`` is set (``TORCH_CUDA_ARCH_LIST`` chooses the architectures, as in torch).
No ``-std=`` flag is set here on purpose: torch's build helpers pick the standard its headers
need (C++20 from torch 2.13 on).
"""
import glob
import os
import os.path as osp
import sys

from setuptools import find_packages, setup

ROOT = osp.dirname(osp.abspath(__file__))


def read_version():
    scope = {}
    with open(osp.join(ROOT, 'mmelsa', 'version.py')) as f:
        exec(f.read(), scope)
    return scope['__version__']


def import_torch():
    try:
        import torch  # noqa: F401
    except ImportError:
        sys.exit(
            'mmelsa compiles a C++/CUDA extension against PyTorch, and PyTorch is not installed '
            'in this Python (' + sys.executable + ').\n'
            'Install it first, e.g. `pip install torch==2.13.0`, then run\n'
            '    pip install -e . --no-build-isolation\n'
            'or let `bash tools/setup_env.sh` set up everything. If torch is installed, pip ran '
            'this build in an isolated environment: add --no-build-isolation.')
    return torch


def want_cuda(torch):
    from torch.utils.cpp_extension import CUDA_HOME
    forced = os.getenv('FORCE_CUDA', '0') == '1'
    if forced and torch.version.cuda is None:
        sys.exit('FORCE_CUDA=1 but this torch (%s) is a CPU-only build; install a CUDA build '
                 'of torch to compile the CUDA kernels.' % torch.__version__)
    if forced and CUDA_HOME is None:
        sys.exit('FORCE_CUDA=1 but no CUDA toolkit was found: set CUDA_HOME to the folder '
                 'that holds bin/nvcc.')
    return forced or (torch.cuda.is_available() and CUDA_HOME is not None)


def rel_glob(pattern):
    return sorted(osp.relpath(p, ROOT) for p in glob.glob(osp.join(ROOT, pattern)))


def make_extensions():
    torch = import_torch()
    from torch.utils.cpp_extension import CppExtension, CUDAExtension

    sources = rel_glob('csrc/pytorch/*.cpp') + rel_glob('csrc/pytorch/cpu/*.cpp')
    include_dirs = [osp.join(ROOT, 'csrc', 'common')]
    define_macros = []
    extra_compile_args = {'cxx': ['-O3']}
    if want_cuda(torch):
        sources += rel_glob('csrc/pytorch/cuda/*.cu')
        include_dirs.append(osp.join(ROOT, 'csrc', 'common', 'cuda'))
        define_macros.append(('MMELSA_WITH_CUDA', None))
        extra_compile_args['nvcc'] = ['-O3', '--expt-relaxed-constexpr', '-lineinfo']
        print('mmelsa: building the CPU and CUDA kernels (%d sources)' % len(sources))
        return [CUDAExtension('mmelsa._ext', sources, include_dirs=include_dirs,
                              define_macros=define_macros,
                              extra_compile_args=extra_compile_args)]
    print('mmelsa: building the CPU kernels only (%d sources); set FORCE_CUDA=1 to add '
          'the CUDA kernels' % len(sources))
    return [CppExtension('mmelsa._ext', sources, include_dirs=include_dirs,
                         define_macros=define_macros, extra_compile_args=extra_compile_args)]


def torch_requirement():
    """The compiled extension works only with the torch it was built against (C++ ABI), so the
    built package declares exactly that release (any local build tag, +cpu / +cu130, matches)."""
    torch = import_torch()
    return 'torch==' + torch.__version__.split('+')[0]


def build_ext_class():
    from torch.utils.cpp_extension import BuildExtension
    return BuildExtension.with_options(use_ninja=True)


setup(
    name='mmelsa',
    version=read_version(),
    description='ELSA (Enhanced Local Self-Attention) backbones and kernels for OpenMMLab 2.0',
    long_description=open(osp.join(ROOT, 'README.md')).read() if osp.exists(
        osp.join(ROOT, 'README.md')) else '',
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    python_requires='>=3.9',
    packages=find_packages(include=['mmelsa', 'mmelsa.*']),
    install_requires=['numpy', 'mmengine>=0.10.7', torch_requirement()],
    extras_require={
        'det': ['mmdet==3.3.0', 'mmcv==2.1.0'],
        'seg': ['mmsegmentation==1.2.2', 'mmcv==2.1.0', 'ftfy', 'regex'],
        'tests': ['pytest'],
    },
    ext_modules=make_extensions(),
    cmdclass={'build_ext': build_ext_class()},
    zip_safe=False,
)
