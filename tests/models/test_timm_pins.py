"""The timm internals ELSA-VOLO relies on are pinned by the digest of their source, as mmelsa's
mmengine patches are: the pins match the installed timm, a changed object is refused where
ELSA-VOLO is built (one line naming it and the supported range), and setup.py declares the same
timm range."""
import ast
import inspect
import os.path as osp

import pytest

pytest.importorskip('timm')

from mmelsa.models import timm_pins  # noqa: E402
from mmelsa.utils.source_pins import resolve  # noqa: E402

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def test_installed_timm_sources_are_the_verified_ones():
    assert timm_pins.timm_drift() == {}
    assert len(timm_pins.TIMM_UPSTREAM) >= 10
    assert all(len(d) == 16 for d in timm_pins.TIMM_UPSTREAM.values())


@pytest.fixture
def planted_change(monkeypatch):
    """VOLO.forward_head's source with one more line, as a timm release might change it."""
    target = 'timm.models.volo:VOLO.forward_head'
    obj = resolve(target)
    real = inspect.getsource

    def changed(o):
        text = real(o)
        return text + '    pass\n' if o is obj else text

    monkeypatch.setattr(inspect, 'getsource', changed)
    return target


def test_a_changed_timm_object_is_named(planted_change):
    drift = timm_pins.timm_drift()
    assert list(drift) == [planted_change]
    assert drift[planted_change][0] == timm_pins.TIMM_UPSTREAM[planted_change] != \
        drift[planted_change][1]


def test_elsa_volo_refuses_a_changed_timm(planted_change):
    import torch

    from mmelsa.models.elsa_volo import ELSAVOLO
    with pytest.raises(ImportError) as info, torch.device('meta'):
        ELSAVOLO(arch='d1')
    message = str(info.value)
    assert planted_change in message and timm_pins.TIMM_REQUIREMENT in message
    assert timm_pins.VERIFIED_TIMM_VERSION in message and '\n' not in message


def test_setup_declares_the_same_timm_range():
    """setup.py's cls extra names exactly the range the pins are declared for, and the verified
    release is inside it."""
    from packaging.requirements import Requirement
    tree = ast.parse(open(osp.join(REPO, 'setup.py')).read())
    literals = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)
                and isinstance(n.value, str) and n.value.startswith('timm')}
    assert literals == {timm_pins.TIMM_REQUIREMENT}
    assert Requirement(timm_pins.TIMM_REQUIREMENT).specifier.contains(
        timm_pins.VERIFIED_TIMM_VERSION)
