"""mmengine reads ``.yaml`` / ``.yml`` files (configs, annotations) with plain data only.

mmengine 0.10.7's ``YamlHandler`` loads with PyYAML's full ``Loader``, which builds any Python
object a file names (``!!python/object/apply:os.system``). :func:`install` makes its loader
PyYAML's safe one, plus the tuples (``!!python/tuple``) that mmengine's own ``Config.dump``
writes, so ``Config.fromfile`` and ``mmengine.load`` build plain data.

Anchors and aliases stay allowed (PyYAML's own dumps write them for shared values), but a
document whose aliases expand it to more than :data:`MAX_EXPANDED_NODES` nodes (nine aliases of
nine aliases of ... : a few hundred bytes that every later walk or copy, mmengine's ``ConfigDict``
among them, expands a billion times) is refused before anything is built.
"""

__all__ = ['install', 'MAX_EXPANDED_NODES', 'expanded_size']

#: nodes a YAML document may have once its aliases are expanded
MAX_EXPANDED_NODES = 1_000_000


def expanded_size(node, limit=MAX_EXPANDED_NODES):
    """How many nodes ``node`` (a composed PyYAML node) has with every alias expanded, counted
    up to just past ``limit``; linear in the size of the composed graph."""
    import yaml
    sizes = {}

    def size(n):
        key = id(n)
        if key in sizes:
            return sizes[key] or 1  # 0: still being counted, a recursive alias
        sizes[key] = 0
        total = 1
        if isinstance(n, yaml.SequenceNode):
            children = n.value
        elif isinstance(n, yaml.MappingNode):
            children = [c for pair in n.value for c in pair]
        else:
            children = ()
        for child in children:
            total += size(child)
            if total > limit:
                break
        sizes[key] = min(total, limit + 1)
        return sizes[key]

    return size(node)


def install():
    """Make the safe loader (plus ``!!python/tuple``, with the expansion bound) the default of
    mmengine's ``YamlHandler`` (idempotent)."""
    import yaml
    from mmengine.fileio.handlers import yaml_handler

    if getattr(yaml_handler.Loader, 'mmelsa_safe', False):
        return

    class SafeConfigYamlLoader(getattr(yaml, 'CSafeLoader', yaml.SafeLoader)):
        """PyYAML's safe loader plus the tuples that mmengine's Config.dump writes."""
        mmelsa_safe = True

        def construct_document(self, node):
            if expanded_size(node) > MAX_EXPANDED_NODES:
                where = getattr(self, 'name', None) or 'a YAML document'
                raise yaml.YAMLError(
                    f'{where}: expands to more than {MAX_EXPANDED_NODES} values through its '
                    f'aliases (&anchor / *alias); refusing to build it')
            return super().construct_document(node)

    SafeConfigYamlLoader.add_constructor(
        'tag:yaml.org,2002:python/tuple',
        lambda loader, node: tuple(loader.construct_sequence(node, deep=True)))
    yaml_handler.Loader = SafeConfigYamlLoader
