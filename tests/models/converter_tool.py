"""``tools/model_converters/elsa2mmelsa.py`` loaded as a module (tools/ is not a package), for
the tests that run its ``main`` in process."""
import importlib.util
import os.path as osp

ROOT = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))


def load_converter():
    spec = importlib.util.spec_from_file_location(
        'elsa2mmelsa', osp.join(ROOT, 'tools', 'model_converters', 'elsa2mmelsa.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
