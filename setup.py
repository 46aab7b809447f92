"""Build and install mmelsa.

The native extension ``mmelsa._ext`` is compiled from ``csrc/`` the way mmcv builds its ops:
the device-independent and CPU sources (``csrc/pytorch/*.cpp``, ``csrc/pytorch/cpu/``) always,
those of ``csrc/pytorch/cuda/`` (the launchers and the ops' CUDA kernels) as well when a GPU is
visible to torch or when ``FORCE_CUDA=1`` is set (``TORCH_CUDA_ARCH_LIST`` chooses the
architectures, as in torch).
No ``-std=`` flag is set here on purpose: torch's build helpers pick the standard its headers
need (C++20 from torch 2.13 on).
"""
import glob
import os
import os.path as osp
import shutil
import sys

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py
from setuptools.command.develop import develop

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
            'Install it first, e.g. `pip install torch==2.14.1 torchvision==0.29.1`, then run\n'
            '    python setup.py develop --no-deps   (or: pip install . --no-build-isolation)\n'
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
    extra_link_args = []
    if sys.platform.startswith('linux'):
        # at::parallel_for is inlined from torch's headers into our sources: without OpenMP it
        # runs its loop on one thread. torch's wheels load their own libgomp.so.1, which this
        # link then shares (same soname), so torch.set_num_threads() governs our loops too.
        extra_compile_args['cxx'].append('-fopenmp')
        extra_link_args.append('-fopenmp')
    if want_cuda(torch):
        # .cpp: the CUDA dispatch key's op kernels, host code for the C++ compiler; .cu: nvcc's
        sources += rel_glob('csrc/pytorch/cuda/*.cpp') + rel_glob('csrc/pytorch/cuda/*.cu')
        include_dirs.append(osp.join(ROOT, 'csrc', 'common', 'cuda'))
        define_macros.append(('MMELSA_WITH_CUDA', None))
        extra_compile_args['nvcc'] = ['-O3', '--expt-relaxed-constexpr', '-lineinfo']
        print('mmelsa: building the CPU and CUDA kernels (%d sources)' % len(sources))
        return [CUDAExtension('mmelsa._ext', sources, include_dirs=include_dirs,
                              define_macros=define_macros,
                              extra_compile_args=extra_compile_args,
                              extra_link_args=extra_link_args)]
    print('mmelsa: building the CPU kernels only (%d sources); set FORCE_CUDA=1 to add '
          'the CUDA kernels' % len(sources))
    return [CppExtension('mmelsa._ext', sources, include_dirs=include_dirs,
                         define_macros=define_macros, extra_compile_args=extra_compile_args,
                         extra_link_args=extra_link_args)]


def torch_requirement():
    """The compiled extension works only with the torch it was built against (C++ ABI), so the
    built package declares exactly that release (any local build tag, +cpu / +cu130, matches)."""
    torch = import_torch()
    return 'torch==' + torch.__version__.split('+')[0]


# What `mim` (OpenMMLab's package manager) looks for in an installed package, as mmdet and mmseg
# ship it: mmelsa/.mim/{model-index.yml, configs/, tools/}. A built package (wheel, sdist,
# `pip install .`) carries copies; a development install (`setup.py develop`, which
# tools/setup_env.sh uses) gets symbolic links into the checkout, so edits show at once.
MIM_ITEMS = ('model-index.yml', 'configs', 'tools')


def mim_files_for_build(build_lib):
    target = osp.join(build_lib, 'mmelsa', '.mim')
    if osp.isdir(target):
        shutil.rmtree(target)
    os.makedirs(target)
    skip = shutil.ignore_patterns('__pycache__', '*.pyc')
    for item in MIM_ITEMS:
        src = osp.join(ROOT, item)
        if osp.isdir(src):
            shutil.copytree(src, osp.join(target, item), ignore=skip)
        else:
            shutil.copy2(src, osp.join(target, item))


def mim_links_in_checkout():
    target = osp.join(ROOT, 'mmelsa', '.mim')
    os.makedirs(target, exist_ok=True)
    for item in MIM_ITEMS:
        link = osp.join(target, item)
        if osp.islink(link) or osp.isfile(link):
            os.remove(link)
        elif osp.isdir(link):
            shutil.rmtree(link)
        # Relative links keep working when the checkout moves.
        os.symlink(osp.join('..', '..', item), link)


class BuildPyWithMim(build_py):
    def run(self):
        super().run()
        if getattr(self, 'editable_mode', False):
            mim_links_in_checkout()
        else:
            mim_files_for_build(self.build_lib)


class DevelopWithMim(develop):
    def run(self):
        super().run()
        mim_links_in_checkout()


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
    install_requires=['numpy', 'packaging', 'mmengine>=0.10.7,<0.11', torch_requirement()],
    extras_require={
        'det': ['mmdet==3.3.0', 'mmcv==2.1.0'],
        'seg': ['mmsegmentation==1.2.2', 'mmcv==2.1.0', 'ftfy', 'regex'],
        # classification: mmpretrain's ModelHub names and timm's entry points (mmelsa.registry);
        # timm's range is mmelsa.models.timm_pins.TIMM_REQUIREMENT (ELSA-VOLO's timm internals
        # are pinned there by the digest of their source)
        'cls': ['mmpretrain==1.2.0', 'mmcv==2.1.0', 'timm>=0.9,<1.1'],
        'tests': ['pytest', 'hypothesis'],
    },
    ext_modules=make_extensions(),
    cmdclass={'build_ext': build_ext_class(), 'build_py': BuildPyWithMim,
              'develop': DevelopWithMim},
    zip_safe=False,
)
