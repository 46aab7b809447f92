"""Whether a checkpoint's weights fit a model: by value, not only by name.

mmengine loads weights non-strictly (``load_from``, ``tools/test.py CONFIG CKPT``, Inferencers,
``init_detector``, ``init_model``, ``get_model``): a checkpoint of another model only logs "do not
match exactly", a value that is not a tensor only logs "expected torch.Tensor", and the model runs
with partly random weights. :func:`check_checkpoint_fits` refuses such a file first:

* every model key is present, with a real tensor (dense, not meta) of the model's shape and a
  compatible dtype (floating for floating, integer for integer, bool for bool); BatchNorm's
  ``num_batches_tracked`` alone may be absent (mmengine and torch fill it in);
* no key the model does not have.

With ``allow_partial=True`` (the opt-in ``--allow-partial-load`` / ``allow_partial_load = True``)
missing and unexpected keys and other shapes are allowed, as mmengine then skips them with a
warning, but a value under one of the model's keys that is not a real tensor is still refused:
it loads as nothing.
"""
import re

import torch

from .errors import CheckpointMismatchError

__all__ = ['check_checkpoint_fits', 'check_loaded_checkpoint_fits', 'OPTIONAL_SUFFIXES']

#: how many keys of each kind an error message names
_SHOWN = 4
#: model keys a checkpoint may lack (mmengine's and torch's loaders fill them in)
OPTIONAL_SUFFIXES = ('.num_batches_tracked', )


def _names(keys):
    keys = sorted(keys)
    more = f' and {len(keys) - _SHOWN} more' if len(keys) > _SHOWN else ''
    return ', '.join(keys[:_SHOWN]) + more


def _kind(dtype):
    if dtype == torch.bool:
        return 'bool'
    if dtype.is_complex:
        return 'complex'
    return 'floating' if dtype.is_floating_point else 'integer'


def _value_problem(value, own):
    """Why ``value`` cannot be loaded into the model's tensor ``own``, or None."""
    if not isinstance(value, torch.Tensor) or type(value) not in (torch.Tensor,
                                                                     torch.nn.Parameter):
        return f'a {type(value).__module__}.{type(value).__qualname__}, not a tensor'
    if value.is_meta or value.layout != torch.strided:
        return f'a {"meta" if value.is_meta else value.layout} tensor without values'
    if _kind(value.dtype) != _kind(own.dtype):
        return f'{value.dtype} for a {own.dtype} tensor'
    return None


def check_checkpoint_fits(model, state_dict, source, allow_partial=False):
    """Raise :class:`CheckpointMismatchError` unless ``state_dict`` fits ``model`` (see the
    module docstring). ``source`` names the file in the message."""
    own = model.state_dict()
    bad = [f'{k} is {problem}' for k in sorted(set(own) & set(state_dict))
           if (problem := _value_problem(state_dict[k], own[k]))]
    if bad:
        raise CheckpointMismatchError(
            f'checkpoint {source} cannot be loaded into {type(model).__name__}: {len(bad)} '
            f'values are not weights ({_names(bad)})')
    if allow_partial:
        return
    missing = {k for k in set(own) - set(state_dict) if not k.endswith(OPTIONAL_SUFFIXES)}
    unexpected = set(state_dict) - set(own)
    wrong = [f'{k} {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}'
             for k in sorted(set(own) & set(state_dict)) if state_dict[k].shape != own[k].shape]
    if not (missing or unexpected or wrong):
        return
    parts = []
    if missing:
        parts.append(f'{len(missing)} model keys missing from it ({_names(missing)})')
    if unexpected:
        parts.append(f'{len(unexpected)} keys the model does not have ({_names(unexpected)})')
    if wrong:
        parts.append(f'{len(wrong)} tensors of the wrong shape ({_names(wrong)})')
    raise CheckpointMismatchError(
        f'checkpoint {source} does not fit the model {type(model).__name__}: '
        + '; '.join(parts) + '. Is it a checkpoint of another model or config? To load only '
        'what fits, pass --allow-partial-load (config: allow_partial_load = True; elsewhere: '
        'MMELSA_ALLOW_PARTIAL_LOAD=1).')


def check_loaded_checkpoint_fits(model, checkpoint, source, revise_keys=((r'^module.', ''), ),
                                 allow_partial=False):
    """:func:`check_checkpoint_fits` for a loaded checkpoint (its ``state_dict``, or the
    dict itself), with its keys revised as mmengine's ``_load_checkpoint_to_model`` revises
    them before loading (by default a DataParallel ``module.`` prefix is removed)."""
    state_dict = checkpoint.get('state_dict', checkpoint) \
        if isinstance(checkpoint, dict) else checkpoint
    if not isinstance(state_dict, dict):
        raise CheckpointMismatchError(
            f'checkpoint {source} holds no state dict (found {type(state_dict).__name__})')
    revised = {}
    for key, value in state_dict.items():
        for pattern, repl in revise_keys:
            key = re.sub(pattern, repl, str(key))
        revised[key] = value
    check_checkpoint_fits(model, revised, source, allow_partial)
