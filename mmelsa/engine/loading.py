"""mmengine reads every checkpoint through :mod:`mmelsa.checkpoint`, whatever the scheme.

:func:`install` (from :mod:`mmelsa.engine.patches`) makes :func:`read_checkpoint_file` mmengine's
loader for plain paths and http(s) URLs (which the ``open-mmlab://`` / ``torchvision://`` model
zoo schemes resolve to), and wraps ``CheckpointLoader.load_checkpoint``, the entry of every
scheme (``s3://``, ``pavi://`` and any a user registers), so that config text from an untrusted
file never reaches mmengine, whichever loader read the file.
"""
from ..checkpoint.config_text import remove_config_text
from ..checkpoint.reading import download, is_trusted, read_checkpoint_file

__all__ = ['load_from_local', 'load_from_http', 'install']


def load_from_local(filename, map_location=None):
    """mmengine's loader for plain paths (same name, so mmengine's log line reads the same)."""
    return read_checkpoint_file(filename, map_location)


def load_from_http(filename, map_location=None, model_dir=None, progress=None):
    """mmengine's loader for http(s) URLs: download to torch hub's cache, then read safely."""
    return read_checkpoint_file(download(filename), map_location)


def _without_untrusted_config_text(original):
    """Wrap ``CheckpointLoader.load_checkpoint(cls, filename, map_location, logger)``."""

    def load_checkpoint(cls, filename, map_location=None, logger='current'):
        checkpoint = original(filename, map_location, logger)
        if isinstance(checkpoint, dict) and not is_trusted(filename):
            remove_config_text(checkpoint, filename)
        return checkpoint

    load_checkpoint.mmelsa_original = original
    return classmethod(load_checkpoint)


def install():
    """See the module docstring (idempotent)."""
    import mmengine.runner.checkpoint as mm_checkpoint

    loader = mm_checkpoint.CheckpointLoader
    # '' is mmengine's scheme for plain paths; force=True replaces its own loaders.
    loader.register_scheme(prefixes='', loader=load_from_local, force=True)
    loader.register_scheme(prefixes=('http://', 'https://'), loader=load_from_http, force=True)
    # The model-zoo schemes (open-mmlab://, torchvision://, ...) call these module globals.
    mm_checkpoint.load_from_http = load_from_http
    mm_checkpoint.load_from_local = load_from_local
    if not hasattr(loader.load_checkpoint, 'mmelsa_original'):
        loader.load_checkpoint = _without_untrusted_config_text(loader.load_checkpoint)
