"""mmdet's and mmseg's SwinTransformer with the scaled-ReLU convolutional stem in place of the
patchify convolution (``type='ConvStemSwinTransformer'``; needs the toolbox of the config).

The stem replaces the patch embedding's ``projection`` (a convolution of kernel = stride = 4),
reaching the same stride; the embedding's padding to a multiple of the patch size and its
LayerNorm stay as they are. Without ``conv_stem`` nothing changes: the model is the toolbox's
Swin, and Swin checkpoints load into it.
"""
from mmengine.registry import DefaultScope

from .conv_stem import ConvStem

__all__ = ['ConvStemSwinTransformer', 'conv_stem_swin_class']


class _MapStem(ConvStem):
    """A :class:`ConvStem` whose ``forward`` gives the embedding map (B, C, Hp, Wp), as the
    convolution it stands in for does."""

    def forward(self, x):
        return self.forward_map(x)


_classes = {}


def conv_stem_swin_class(toolbox):
    """The conv-stem Swin of ``toolbox`` ('mmdet' or 'mmseg'): a subclass of its
    ``SwinTransformer`` taking ``conv_stem`` (a dict of :class:`ConvStem` arguments, ``{}`` for
    the paper's stem; None: the plain Swin)."""
    if toolbox not in _classes:
        if toolbox == 'mmseg':
            from mmseg.models.backbones import SwinTransformer
        elif toolbox == 'mmdet':
            from mmdet.models.backbones import SwinTransformer
        else:
            raise ValueError(f"toolbox must be 'mmdet' or 'mmseg', got {toolbox!r}")

        class ConvStemSwin(SwinTransformer):
            __doc__ = (f'{toolbox}\'s SwinTransformer with ``conv_stem``: the scaled-ReLU '
                       f'convolutional stem as ``patch_embed.projection`` (see '
                       f':mod:`mmelsa.models.conv_stem_swin`).')

            def __init__(self, conv_stem=None, **kwargs):
                super().__init__(**kwargs)
                if conv_stem is not None:
                    self.patch_embed.projection = _MapStem(
                        kwargs.get('in_channels', 3), kwargs.get('embed_dims', 96),
                        kwargs.get('patch_size', 4), **conv_stem)

        ConvStemSwin.__name__ = ConvStemSwin.__qualname__ = 'ConvStemSwinTransformer'
        _classes[toolbox] = ConvStemSwin
    return _classes[toolbox]


def ConvStemSwinTransformer(**kwargs):  # noqa: N802  (a type name in configs)
    """Build the conv-stem Swin of the toolbox whose config is running: mmseg's Swin under
    mmseg's default scope, mmdet's otherwise (mmengine's registries decide the same way)."""
    scope = DefaultScope.get_current_instance()
    toolbox = 'mmseg' if scope is not None and scope.scope_name == 'mmseg' else 'mmdet'
    try:
        cls = conv_stem_swin_class(toolbox)
    except ImportError as err:
        raise ImportError(f'ConvStemSwinTransformer is built on {toolbox}\'s SwinTransformer '
                          f'and needs {toolbox} installed: {err}') from err
    return cls(**kwargs)
