"""Small layer helpers shared by the ELSA models.

They read mmcv-style ``act_cfg`` / ``norm_cfg`` dicts without needing mmcv, so the model works
(and is testable) with only torch and mmengine installed.
"""
import difflib
import inspect

import torch.nn as nn

# mmcv's short names for the norm layers; only LayerNorm makes sense on channels-last tokens.
_LN_NAMES = ('LN', 'LayerNorm')


def build_activation(act_cfg):
    """Build an activation from an mmcv-style config, e.g. ``dict(type='GELU')``.

    ``type`` is the name of a ``torch.nn`` activation class (or the class itself); the other
    keys are its keyword arguments. mmcv's ``inplace`` is dropped for activations that do not
    take it (GELU), as mmcv does.
    """
    if act_cfg is None:
        return nn.Identity()
    if not isinstance(act_cfg, dict) or 'type' not in act_cfg:
        raise ValueError(f'act_cfg must be a dict with a "type" key, got {act_cfg!r}')
    cfg = dict(act_cfg)
    act_type = cfg.pop('type')
    if isinstance(act_type, str):
        cls = getattr(nn, act_type, None)
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise ValueError(f'act_cfg: unknown activation type {act_type!r}; use the name of '
                             f'a torch.nn activation such as "GELU" or "ReLU"')
    elif isinstance(act_type, type) and issubclass(act_type, nn.Module):
        cls = act_type
    else:
        raise ValueError(f'act_cfg: bad activation type {act_type!r}')
    if cls is nn.GELU:
        cfg.pop('inplace', None)
    return cls(**cfg)


def build_norm(norm_cfg, num_features):
    """Build a LayerNorm from an mmcv-style config (``type`` 'LN', optional ``eps`` and
    ``requires_grad``). Other norm types are rejected: the blocks normalise channels-last
    tokens, which only LayerNorm does."""
    if not isinstance(norm_cfg, dict) or 'type' not in norm_cfg:
        raise ValueError(f'norm_cfg must be a dict with a "type" key, got {norm_cfg!r}')
    cfg = dict(norm_cfg)
    norm_type = cfg.pop('type')
    if norm_type not in _LN_NAMES and norm_type is not nn.LayerNorm:
        raise ValueError(f'norm_cfg: only LayerNorm ("LN") is supported by ELSA-Swin, '
                         f'got type={norm_type!r}')
    requires_grad = cfg.pop('requires_grad', True)
    eps = cfg.pop('eps', 1e-5)
    if cfg:
        raise ValueError(f'norm_cfg: unsupported keys {sorted(cfg)} for LayerNorm')
    layer = nn.LayerNorm(num_features, eps=eps)
    for p in layer.parameters():
        p.requires_grad = requires_grad
    return layer


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample, rescaling the kept ones.

    Shape: any (B, ...) -> same.
    """

    def __init__(self, drop_prob=0.):
        super().__init__()
        if not 0. <= float(drop_prob) <= 1.:
            raise ValueError(f'drop path probability must be in [0, 1], got {drop_prob}')
        self.drop_prob = float(drop_prob)

    def forward(self, x):
        if self.drop_prob == 0. or not self.training:
            return x
        keep = 1. - self.drop_prob
        if keep == 0.:  # every branch dropped: zeros (mask / keep would be 0 / 0)
            return x * 0.
        mask = x.new_empty((x.shape[0], ) + (1, ) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self):
        return f'drop_prob={self.drop_prob:.3f}'


class Mlp(nn.Module):
    """Two-layer MLP ``fc1`` -> activation -> dropout -> ``fc2`` -> dropout.

    Shape: (..., C) -> (..., C).
    """

    def __init__(self, dim, hidden_dim, act_cfg=dict(type='GELU'), drop=0.):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = build_activation(act_cfg)
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x):
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


def to_2tuple(x):
    if isinstance(x, (tuple, list)):
        return tuple(x)
    return (x, x)


__all__ = ['build_activation', 'build_norm', 'DropPath', 'Mlp', 'to_2tuple']


class SuggestsArguments:
    """Base class: an unknown keyword argument is a one-line TypeError naming the closest
    accepted one, on every path that builds the class (a config through any registry, mmdet's
    ``init_detector``, mmseg's ``init_model``, a direct call), instead of Python's bare
    "unexpected keyword argument" from deep inside a build."""

    def __new__(cls, *args, **kwargs):
        params = inspect.signature(cls.__init__).parameters
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            accepted = [name for name in params if name != 'self']
            for key in kwargs:
                if key not in accepted:
                    near = difflib.get_close_matches(key, accepted, n=1, cutoff=0.6)
                    hint = f'; did you mean {near[0]!r}?' if near else ''
                    raise TypeError(f'{cls.__name__} has no argument {key!r}{hint}')
        return super().__new__(cls)
