"""timm entry points: ``timm.create_model('elsa_swin_tiny')`` (small, base) and
``timm.create_model('elsa_volo_d1')`` (.. d5) build ImageNet classifiers (images -> logits;
``num_classes``, ``in_chans`` and the backbones' own arguments pass through), and
``timm.list_models('*elsa*')`` lists them.

:func:`register_timm_models` is called by ``import mmelsa`` (:mod:`mmelsa.registry`) when timm
can be imported; this module imports timm.

Weights: ELSA-Swin's official ImageNet files are Baidu Pan / Google Drive shares, not direct
downloads, so the pretrained configs name them (``source``, ``notes``) with an empty ``url``.
Download one and pass it as a file; it loads strictly, read through mmelsa's checkpoint gate
(plain data only unless trusted, see README "Safety")::

    timm.create_model('elsa_swin_tiny', pretrained=True,
                      pretrained_cfg_overlay=dict(file='elsa_swin_tiny.pth'))

``pretrained=True`` without a file is a one-line ``RuntimeError`` saying so. No ELSA-VOLO
weights were published.
"""
import torch
import torch.nn as nn
from torch.nn.init import trunc_normal_

from .elsa_swin import ELSASwinTransformer
from .utils import build_norm

#: the official ImageNet-1K checkpoints (docs/elsa_facts.md section 5, configs/elsa_swin_cls)
OFFICIAL_SWIN_FILES = {
    'elsa_swin_tiny': 'https://pan.baidu.com/s/16lPWTybCeoHT4BMDaKDTYw?pwd=cw25',
    'elsa_swin_small': 'https://pan.baidu.com/s/1qTyCm7vLXqd9KEMyIsKLrQ?pwd=e6b2',
    'elsa_swin_base': 'https://github.com/damo-cv/ELSA',  # linked from the release's README
}
SWIN_ARCH = {'elsa_swin_tiny': 'tiny', 'elsa_swin_small': 'small', 'elsa_swin_base': 'base'}
VOLO_ARCH = {f'elsa_volo_d{i}': f'd{i}' for i in range(1, 6)}


class ELSASwinClassifier(ELSASwinTransformer):
    """ELSA-Swin ImageNet classifier with the official file's layout: the backbone's keys at
    top level, then the last stage's output -> LayerNorm ``norm`` -> mean over positions ->
    Linear ``head``.

    Args:
        arch (str): 'tiny', 'small' or 'base'.
        num_classes (int): Classes of ``head``; 0: no head (``forward`` gives the pooled
            features). Default: 1000.
        in_chans (int): Input channels. Default: 3.
        global_pool (str): 'avg' (the official pooling) only.
        **kwargs: :class:`ELSASwinTransformer` arguments (drop_path_rate, with_cp, ...).

    Shape:
        - Input: (B, in_chans, H, W)
        - Output: (B, num_classes) logits
    """

    def __init__(self, arch='tiny', num_classes=1000, in_chans=3, global_pool='avg', **kwargs):
        if global_pool != 'avg':
            raise ValueError(f'global_pool must be "avg" (the official pooling), got '
                             f'{global_pool!r}')
        for name in ('out_indices', 'in_channels'):
            if name in kwargs:
                raise ValueError(f'{name} is set by the classifier (use in_chans for the '
                                 f'input channels)')
        # the official classifier does not shift the last stage's single 7 x 7 window
        kwargs.setdefault('pad_small_map', False)
        super().__init__(arch=arch, in_channels=in_chans, out_indices=(), **kwargs)
        self.backbone_arch = arch
        self.stage_features = list(self.num_features)
        # timm's convention: num_features is the width the head sees
        self.num_features = self.head_hidden_size = self.stage_features[-1]
        self.global_pool = global_pool
        self.norm = build_norm(kwargs.get('norm_cfg', dict(type='LN')), self.num_features)
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else \
            nn.Identity()
        self._init_head()

    def _init_head(self):
        if isinstance(self.head, nn.Linear):
            trunc_normal_(self.head.weight, std=.02)
            nn.init.zeros_(self.head.bias)

    def init_weights(self):
        super().init_weights()
        nn.init.ones_(self.norm.weight)
        nn.init.zeros_(self.norm.bias)
        self._init_head()

    def get_classifier(self):
        return self.head

    def reset_classifier(self, num_classes, global_pool=None):
        if global_pool not in (None, 'avg'):
            raise ValueError(f'global_pool must be "avg", got {global_pool!r}')
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else \
            nn.Identity()
        self._init_head()

    def forward_features(self, x):
        """(B, C_in, H, W) -> the last stage's output after ``norm``, (B, h, w, C)."""
        x = self.embed_patches(x)
        for layer in self.layers:
            out, x = layer(x)
        return self.norm(out)

    def forward_head(self, x, pre_logits=False):
        x = x.mean(dim=(1, 2))
        return x if pre_logits else self.head(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def _volo_classifier_class():
    from .elsa_volo import ELSAVOLO

    class ELSAVOLOClassifier(ELSAVOLO):
        """ELSA-VOLO with VOLO's class-token classifier ``head`` (images -> logits)."""

        def __init__(self, arch='d1', num_classes=1000, in_chans=3, global_pool='token',
                     **kwargs):
            if 'in_channels' in kwargs:
                raise ValueError('use in_chans for the input channels')
            super().__init__(arch=arch, in_channels=in_chans, **kwargs)
            self.reset_classifier(num_classes, global_pool)
            if isinstance(self.head, nn.Linear):
                self._init_linear(self.head)

        def forward(self, x):
            return self.forward_head(self.forward_features(x))

    return ELSAVOLOClassifier


def _pretrained_cfgs():
    from timm.models import generate_default_cfgs
    common = dict(url='', num_classes=1000, input_size=(3, 224, 224), pool_size=(7, 7),
                  crop_pct=0.875, interpolation='bicubic', mean=(0.485, 0.456, 0.406),
                  std=(0.229, 0.224, 0.225), first_conv='patch_embed.proj', classifier='head',
                  license='apache-2.0', paper_ids='arXiv:2112.12786',
                  paper_name='ELSA: Enhanced Local Self-Attention for Vision Transformer',
                  origin_url='https://github.com/damo-cv/ELSA')
    cfgs = {}
    for name, source in OFFICIAL_SWIN_FILES.items():
        cfgs[name] = dict(
            common, source=source,
            notes=(f'official ImageNet-1K checkpoint of the ELSA release: {source} (a share, '
                   f'or linked from the release README; not a direct download): download it, '
                   f'then pass pretrained_cfg_overlay=dict(file=PATH)', ))
    for name in VOLO_ARCH:
        cfgs[name] = dict(common, pool_size=None, crop_pct=0.96, first_conv='patch_embed.conv.0',
                          notes=('no ELSA-VOLO weights were published', ))
    return generate_default_cfgs(cfgs)


def _strip_module(key):
    return key[len('module.'):] if key.startswith('module.') else key


def load_official_classifier(model, filename):
    """Load an official ELSA-Swin ImageNet file (or one saved from this classifier) into
    ``model`` through mmelsa's checkpoint gate: ``attn_mask`` buffers are dropped; the head is
    left out when its number of classes differs; anything else missing or extra is an error."""
    from ..checkpoint import read_checkpoint
    from .official_weights import unwrap_state_dict
    sd = {_strip_module(k): v for k, v in unwrap_state_dict(read_checkpoint(filename)).items()
          if not k.endswith('attn_mask')}
    own = model.state_dict()
    skipped = []
    if isinstance(model.head, nn.Linear) and 'head.weight' in sd and \
            tuple(sd['head.weight'].shape) != tuple(own['head.weight'].shape):
        skipped = ['head.weight', 'head.bias']
    elif not isinstance(model.head, nn.Linear):
        skipped = [k for k in sd if k.startswith('head.')]
    for k in skipped:
        sd.pop(k, None)
    bad = {k: tuple(v.shape) for k, v in sd.items() if k in own and isinstance(v, torch.Tensor)
           and tuple(v.shape) != tuple(own[k].shape)}
    missing = sorted(set(own) - set(sd) - set(skipped))
    unexpected = sorted(set(sd) - set(own))
    if bad or missing or unexpected:
        raise RuntimeError(f'{filename} does not fit {type(model).__name__}'
                           f'({model.backbone_arch}): missing {missing[:5]}, unexpected '
                           f'{unexpected[:5]}, other shapes {sorted(bad)[:5]}')
    model.load_state_dict(sd, strict=False)
    return skipped


def _no_weights_error(name, cfg):
    where = cfg.get('source') or ''
    hint = (f'the official file: {where} (not a direct download); download it, then '
            if where else '')
    return RuntimeError(f'{name}: no downloadable weights; {hint}pass '
                        f'pretrained_cfg_overlay=dict(file=PATH) with pretrained=True, or use '
                        f'pretrained=False')


def _create(name, cls, arch, pretrained=False, **kwargs):
    from timm.models import build_model_with_cfg
    model = build_model_with_cfg(cls, name, pretrained=False, arch=arch, **kwargs)
    if pretrained:
        cfg = dict(getattr(model, 'pretrained_cfg', None) or {})
        if cfg.get('file'):
            if not isinstance(model, ELSASwinClassifier):
                raise RuntimeError(f'{name}: loading a file is supported for ELSA-Swin only')
            load_official_classifier(model, cfg['file'])
        elif cfg.get('url'):  # none is set: the official files are shares, not downloads
            raise RuntimeError(f'{name}: url weights are not supported; pass a file')
        else:
            if isinstance(model, ELSASwinClassifier):
                raise _no_weights_error(name, cfg)
            raise RuntimeError(f'{name}: no ELSA-VOLO weights were published; use '
                               f'pretrained=False')
    return model


_REGISTERED = []


def register_timm_models():
    """Register the entry points in timm (idempotent); returns their names."""
    import sys

    from timm.models import is_model, register_model
    if _REGISTERED and all(is_model(n) for n in _REGISTERED):
        return list(_REGISTERED)
    module = sys.modules[__name__]
    module.default_cfgs = _pretrained_cfgs()
    volo_cls = None

    def make(name, arch, swin):
        def entry(pretrained=False, **kwargs):
            nonlocal volo_cls
            if swin:
                cls = ELSASwinClassifier
            else:
                volo_cls = volo_cls or _volo_classifier_class()
                cls = volo_cls
            return _create(name, cls, arch, pretrained=pretrained, **kwargs)
        entry.__name__ = entry.__qualname__ = name
        entry.__module__ = __name__
        entry.__doc__ = f'{name}: ELSA {"Swin" if swin else "VOLO"} {arch} ImageNet classifier.'
        return entry

    names = []
    for name, arch in list(SWIN_ARCH.items()) + list(VOLO_ARCH.items()):
        fn = make(name, arch, name in SWIN_ARCH)
        setattr(module, name, fn)
        register_model(fn)
        names.append(name)
    _REGISTERED[:] = names
    return names


__all__ = ['ELSASwinClassifier', 'register_timm_models', 'load_official_classifier',
           'OFFICIAL_SWIN_FILES']
