"""Datasets shipped with mmelsa: only the seeded toy generator (real data uses mmdet's
CocoDataset and mmseg's ADE20KDataset unchanged). Importing this package is cheap: no torch,
no registries.

The names are resolved lazily (PEP 562) so that ``python -m mmelsa.datasets.toy`` does not
import ``toy`` twice (once via this package, once as ``__main__``), which runpy warns about.
"""
__all__ = ['DET_CLASSES', 'SEG_CLASSES', 'SEG_PALETTE', 'generate_toy_coco', 'generate_toy_ade']


def __getattr__(name):
    if name in __all__:
        from . import toy
        return getattr(toy, name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
