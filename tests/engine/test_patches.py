"""mmelsa's changes to mmengine: one declared range of versions, checked at import, and the
upstream functions they replace, wrap or rely on pinned by the digest of their source, so that
an mmengine upgrade that changes any of them fails here instead of silently losing a fix."""
import ast
import os.path as osp

import pytest

import mmelsa  # noqa: F401  (installs the patches)
from mmelsa.engine import patches

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def test_installed_mmengine_sources_are_the_verified_ones():
    """Every replaced / wrapped / relied-on function is as read at the verified release."""
    assert patches.upstream_drift() == {}
    assert len(patches.UPSTREAM) >= 19 and all(len(d) == 16 for d in patches.UPSTREAM.values())


def test_a_changed_upstream_function_is_named(monkeypatch):
    """The drift check can fail: an upstream function whose source changed is named, with the
    digest it should have and the one it has."""
    import inspect
    target = 'mmengine.runner.checkpoint:save_checkpoint'
    real = inspect.getsource

    def changed(obj):
        text = real(obj)
        return text + '    pass\n' if obj is patches._originals[target] else text

    monkeypatch.setattr(inspect, 'getsource', changed)
    drift = patches.upstream_drift()
    assert list(drift) == [target]
    assert drift[target][0] == patches.UPSTREAM[target] != drift[target][1]


def test_patched_targets_keep_the_originals():
    """What mmelsa wraps is found under the wrapper (the drift check reads the originals)."""
    import mmengine.runner.checkpoint as mm_checkpoint
    from mmengine.hooks import CheckpointHook
    for wrapped in (mm_checkpoint.CheckpointLoader.load_checkpoint,
                    mm_checkpoint.save_checkpoint, CheckpointHook._save_checkpoint_with_step,
                    CheckpointHook._save_best_checkpoint):
        assert wrapped.mmelsa_original is not None
    assert patches._originals['mmengine.runner.checkpoint:save_checkpoint'] is \
        mm_checkpoint.save_checkpoint.mmelsa_original


@pytest.mark.parametrize('version,ok', [
    ('0.10.7', True), ('0.10.6', False), ('0.9.1', False), ('0.11.0', False), ('1.0.0', False),
])
def test_mmengine_version_range(version, ok):
    if ok:
        patches.check_mmengine_version(version)
        return
    with pytest.raises(ImportError) as info:
        patches.check_mmengine_version(version)
    message = str(info.value)
    assert f'mmengine {version} is installed' in message
    assert patches.MMENGINE_REQUIREMENT in message and '\n' not in message


def test_a_release_inside_the_range_but_not_verified_warns():
    with pytest.warns(UserWarning, match='checked against mmengine 0.10.7 only'):
        patches.check_mmengine_version('0.10.9')


def test_setup_declares_the_same_range():
    """setup.py's install_requires names exactly the range the import checks."""
    tree = ast.parse(open(osp.join(REPO, 'setup.py')).read())
    literals = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)
                and isinstance(n.value, str) and n.value.startswith('mmengine')}
    assert literals == {patches.MMENGINE_REQUIREMENT}
