"""Config text stored inside checkpoints, and whether running it can do more than build data.

mmengine 0.10.7 writes the run's config into every checkpoint as Python text (``meta['cfg']``
and ``message_hub['runtime_info']['cfg']``) and later *executes* such text through
``Config.fromstring(text, '.py')``: ``Runner.resume`` for ``meta['config']``, and
``BaseInferencer`` (``DetInferencer(weights=...)`` without a config) for the other two. A
checkpoint that passes ``torch.load(weights_only=True)`` can therefore still carry code.

mmengine's own config dumps (``Config.pretty_text``) are plain data: ``name = value`` lines
whose values are literals, lists, tuples, sets, dicts and ``dict(...)`` calls of those.
:func:`plain_data_problem` accepts exactly that and names the first thing that is not.
"""
import ast

__all__ = ['plain_data_problem', 'CONFIG_TEXT_KEYS']

#: where mmengine keeps config text in a checkpoint: (outer key, inner key, ...)
CONFIG_TEXT_KEYS = (('meta', 'cfg'), ('meta', 'config'), ('message_hub', 'runtime_info', 'cfg'))

# _base_ makes mmengine execute other files; rebinding dict would change what dict() builds.
_REFUSED_NAMES = {'_base_', 'dict'}


def _value_problem(node):
    if isinstance(node, ast.Constant):
        return None
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        return _value_problem(node.operand)
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        return next(filter(None, map(_value_problem, node.elts)), None)
    if isinstance(node, ast.Dict):  # a key None is a {**value} expansion
        return next(filter(None, map(_value_problem, [k for k in node.keys if k is not None]
                                     + node.values)), None)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == 'dict':
        # pretty_text writes dict({'a.b': ...}) for keys that are not identifiers
        values = list(node.args) + [kw.value for kw in node.keywords]
        return next(filter(None, map(_value_problem, values)), None)
    return f'{type(node).__name__} at line {getattr(node, "lineno", "?")}'


def plain_data_problem(text):
    """None when ``text`` only assigns plain data to names, else what it holds beyond that."""
    if not isinstance(text, str):
        return f'a {type(text).__name__} instead of config text'
    if '{{' in text:  # mmengine substitutes these markers into the text before running it
        return 'a {{ }} substitution marker'
    try:
        tree = ast.parse(text)
    except SyntaxError as err:
        return f'not Python ({err.msg}, line {err.lineno})'
    for stmt in tree.body:
        if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
                and isinstance(stmt.targets[0], ast.Name)):
            return f'{type(stmt).__name__} statement at line {stmt.lineno}'
        if stmt.targets[0].id in _REFUSED_NAMES:
            return f'an assignment to {stmt.targets[0].id} at line {stmt.lineno}'
        problem = _value_problem(stmt.value)
        if problem:
            return problem
    return None
