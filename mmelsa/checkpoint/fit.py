"""Whether a checkpoint's weights fit a model: exactly its keys, with its shapes.

mmengine loads weights non-strictly (``load_from``, ``tools/test.py CONFIG CKPT``, Inferencers):
a checkpoint of another model only logs "do not match exactly" and the model runs with partly
random weights. The Runner, the Inferencers and the ONNX export refuse such a file first with
:func:`check_loaded_checkpoint_fits`.
"""
import re

from .reading import CheckpointMismatchError

__all__ = ['check_checkpoint_fits', 'check_loaded_checkpoint_fits']

#: how many keys of each kind an error message names
_SHOWN = 4


def _names(keys):
    keys = sorted(keys)
    more = f' and {len(keys) - _SHOWN} more' if len(keys) > _SHOWN else ''
    return ', '.join(keys[:_SHOWN]) + more


def check_checkpoint_fits(model, state_dict, source):
    """Raise :class:`CheckpointMismatchError` unless ``state_dict`` has exactly the model's
    keys with the model's shapes. ``source`` names the file in the message."""
    own = model.state_dict()
    missing = set(own) - set(state_dict)
    unexpected = set(state_dict) - set(own)
    wrong = [f'{k} {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}'
             for k in sorted(set(own) & set(state_dict))
             if hasattr(state_dict[k], 'shape') and state_dict[k].shape != own[k].shape]
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
        'what fits, pass --allow-partial-load (config: allow_partial_load = True).')


def check_loaded_checkpoint_fits(model, checkpoint, source,
                                 revise_keys=((r'^module.', ''), )):
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
            key = re.sub(pattern, repl, key)
        revised[key] = value
    check_checkpoint_fits(model, revised, source)
