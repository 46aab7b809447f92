"""The package reads top to bottom: each layer imports only the layers below it, so the operator
and the models never depend on the engine, and the engine never on the command-line helpers.

Every import of an mmelsa module is checked, at module level and inside functions alike."""
import ast
import os
import os.path as osp

import pytest

PACKAGE = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'mmelsa')

#: layer -> the mmelsa layers it may import (besides itself and the leaf modules below)
ALLOWED = {
    'utils': set(),
    'ops': {'utils'},
    'checkpoint': set(),
    'models': {'utils', 'ops', 'checkpoint'},
    'engine': {'utils', 'ops', 'checkpoint', 'models'},
    'deployment': {'utils', 'ops', 'checkpoint', 'models'},
    'datasets': set(),
    'cli': {'utils', 'ops', 'checkpoint', 'models', 'engine'},
}
#: modules any layer may import: the version string and the compiled extension
LEAVES = {'version', '_ext'}


def _imported_layers(path, layer):
    """The mmelsa top-level names imported by the file at ``path`` (in package ``layer``)."""
    tree = ast.parse(open(path).read(), path)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.split('.')[0] == 'mmelsa']
            found |= {n.split('.')[1] for n in names if '.' in n}
            if any(n == 'mmelsa' for n in names):
                found.add('*')
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                parts = (node.module or '').split('.')
                if parts[0] != 'mmelsa':
                    continue
                rest = parts[1:]
            elif node.level == 1:
                continue  # the same layer
            elif node.level == 2:
                rest = (node.module or '').split('.')
            else:
                raise AssertionError(f'{path}: relative import above mmelsa')
            if rest and rest[0]:
                found.add(rest[0])
            else:
                found |= {a.name for a in node.names}
    return found - LEAVES


def _modules():
    for layer in sorted(ALLOWED):
        folder = osp.join(PACKAGE, layer)
        for root, _, files in os.walk(folder):
            for name in sorted(files):
                if name.endswith('.py'):
                    yield layer, osp.join(root, name)


@pytest.mark.parametrize('layer,path', list(_modules()),
                         ids=lambda v: osp.relpath(v, PACKAGE) if osp.isabs(str(v)) else v)
def test_layer_imports_only_layers_below(layer, path):
    imported = _imported_layers(path, layer) - {layer}
    assert imported <= ALLOWED[layer], (
        f'{osp.relpath(path, PACKAGE)} imports {sorted(imported - ALLOWED[layer])}, which the '
        f'{layer} layer may not use')


def test_the_check_sees_function_level_imports(tmp_path):
    """A planted import of the engine inside a function of the models is caught."""
    planted = tmp_path / 'planted.py'
    planted.write_text('def f():\n    from ..engine import patches\n    import mmelsa.cli\n')
    assert _imported_layers(str(planted), 'models') == {'engine', 'cli'}
    assert set(ALLOWED) >= {d for d in os.listdir(PACKAGE)
                            if osp.isdir(osp.join(PACKAGE, d)) and not d.startswith(('.', '_'))}
