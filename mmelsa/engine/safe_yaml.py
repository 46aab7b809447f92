"""mmengine reads ``.yaml`` / ``.yml`` files (configs, annotations) with plain data only.

mmengine 0.10.7's ``YamlHandler`` loads with PyYAML's full ``Loader``, which builds any Python
object a file names (``!!python/object/apply:os.system``). :func:`install` makes its loader
PyYAML's safe one, plus the tuples (``!!python/tuple``) that mmengine's own ``Config.dump``
writes, so ``Config.fromfile`` and ``mmengine.load`` build plain data.
"""

__all__ = ['install']


def install():
    """Make the safe loader (plus ``!!python/tuple``) the default of mmengine's
    ``YamlHandler`` (idempotent)."""
    import yaml
    from mmengine.fileio.handlers import yaml_handler

    if getattr(yaml_handler.Loader, 'mmelsa_safe', False):
        return

    class SafeConfigYamlLoader(getattr(yaml, 'CSafeLoader', yaml.SafeLoader)):
        """PyYAML's safe loader plus the tuples that mmengine's Config.dump writes."""
        mmelsa_safe = True

    SafeConfigYamlLoader.add_constructor(
        'tag:yaml.org,2002:python/tuple',
        lambda loader, node: tuple(loader.construct_sequence(node, deep=True)))
    yaml_handler.Loader = SafeConfigYamlLoader
