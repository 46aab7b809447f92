"""Config text inside a checkpoint that is not trusted: none of it reaches mmengine.

mmengine 0.10.7 writes the run's config into every checkpoint as Python text
(``meta['cfg']`` and ``message_hub['runtime_info']['cfg']``; mmcv 1.x files carry
``meta['config']``) and later turns such text into objects: ``Runner.resume`` parses
``meta['config']`` with ``Config.fromstring`` to read ``gpu_ids``, and an Inferencer given
weights alone (``DetInferencer(model=None, weights=CKPT)``) builds the model from the ``cfg``
text. Parsing alone imports what a ``custom_imports`` names, follows ``_base_`` files and
substitutes ``{{ }}`` markers; building then imports any dotted ``type`` name that is not
registered (``type='os.system'`` is called with the dict's other keys) and any package a
``_scope_`` names. Text that is plain data can therefore still run code, and no syntax check
makes it safe.

The rule is by meaning, and the simplest that is safe: from a file that is not trusted, config
text is removed before mmengine sees the checkpoint. The one value mmengine needs from it,
``gpu_ids`` on resume, is read from ``meta['config']`` without running anything (a literal list
or tuple of GPU indices, or ``range(a, b)`` as mmcv 1.x wrote it) and kept as the only line of
that text. Trusted files (the opt-in of :mod:`mmelsa.checkpoint.reading`) are untouched.
"""
import ast
import logging

__all__ = ['CONFIG_TEXT_KEYS', 'remove_config_text', 'gpu_ids_line']

#: where mmengine keeps config text in a checkpoint: (outer key, inner key, ...)
CONFIG_TEXT_KEYS = (('meta', 'cfg'), ('meta', 'config'), ('message_hub', 'runtime_info', 'cfg'))
#: the text that keeps mmengine's GPU-count check on resume
RESUME_TEXT_KEY = ('meta', 'config')


def _gpu_ids(node):
    """The GPU indices a ``gpu_ids`` value names, or None when it is anything else."""
    if isinstance(node, (ast.List, ast.Tuple)):
        values = [e.value for e in node.elts if isinstance(e, ast.Constant)]
        ok = len(values) == len(node.elts)
    elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
          and node.func.id == 'range' and not node.keywords and 1 <= len(node.args) <= 2
          and all(isinstance(a, ast.Constant) for a in node.args)):
        values = [a.value for a in node.args]
        ok = all(type(v) is int for v in values)
        values = list(range(*values)) if ok and max(values) < 1 << 16 else []
    else:
        return None
    if not ok or not all(type(v) is int and 0 <= v < 1 << 16 for v in values):
        return None
    return values


def gpu_ids_line(text):
    """``'gpu_ids = [...]'`` from config text, read without running it; None when the text
    has no top-level ``gpu_ids`` of GPU indices (or is not Python)."""
    if not isinstance(text, str):
        return None
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return None
    found = None
    for stmt in tree.body:
        if (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
                and isinstance(stmt.targets[0], ast.Name) and stmt.targets[0].id == 'gpu_ids'):
            found = _gpu_ids(stmt.value)  # the last assignment wins, as when run
    return None if found is None else f'gpu_ids = {found!r}'


def remove_config_text(checkpoint, source, trust_entry=None):
    """Remove every config text of ``checkpoint`` (in place) but a ``gpu_ids`` line, and say
    so once, naming ``source`` and the opt-in (``trust_entry``, e.g. ``sha256:<digest>``).
    Idempotent; returns ``checkpoint``."""
    removed = []
    for keys in CONFIG_TEXT_KEYS:
        holder = checkpoint
        for key in keys[:-1]:
            holder = holder.get(key) if isinstance(holder, dict) else None
        if not isinstance(holder, dict) or keys[-1] not in holder:
            continue
        text = holder[keys[-1]]
        kept = gpu_ids_line(text) if keys == RESUME_TEXT_KEY else None
        if kept is None:
            del holder[keys[-1]]
        elif kept != text:
            holder[keys[-1]] = kept
        else:
            continue
        removed.append(''.join(f'[{k!r}]' for k in keys))
    if removed:
        from mmengine.logging import print_log

        from .trust import TRUST_ENV
        print_log(
            f'{source}: the config text in checkpoint{", ".join(removed)} is not used: mmengine '
            f'would turn it into code, and the file is not trusted (weights are unaffected; '
            f'to trust it: {TRUST_ENV}={trust_entry or source})', logger='current',
            level=logging.INFO)
    return checkpoint
