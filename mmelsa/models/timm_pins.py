"""The timm code ELSA-VOLO is built on, pinned by the digest of its source.

ELSA-VOLO (:mod:`.elsa_volo`) subclasses timm's ``VOLO`` and reaches into it: VOLO's constructor
builds the network (its Outlooker stage through ``outlooker_blocks``); ELSA-VOLO finds the
``Outlooker`` blocks in it and replaces each block's ``attn``, reading the ``OutlookAttention``
it replaces (``v``, ``num_heads``, ``proj_drop``) and relying on the block to apply ``attn`` to
the channels-last map in ``x + drop_path(attn(norm1(x)))``; its forward is VOLO's
``forward_features`` (``forward_tokens``, ``forward_cls``) and ``forward_head``, and the timm
classifier resets VOLO's head. None of that is timm's public interface, so a timm release may
change it. :func:`check_timm_sources` refuses to build ELSA-VOLO when any of it differs from the
source read at :data:`VERIFIED_TIMM_VERSION`: the network built would no longer be the one
configs/elsa_volo/README.md describes and its tests pin. An upgrade is then a decision: re-read
each object named, adapt ELSA-VOLO, update the digests.
"""
from ..utils.source_pins import drift

__all__ = ['TIMM_REQUIREMENT', 'VERIFIED_TIMM_VERSION', 'TIMM_UPSTREAM', 'timm_drift',
           'check_timm_sources']

#: the timm releases mmelsa supports (``setup.py``'s ``cls`` extra declares the same range)
TIMM_REQUIREMENT = 'timm>=0.9,<1.1'
#: the release whose sources :data:`TIMM_UPSTREAM` digests
VERIFIED_TIMM_VERSION = '1.0.31'

#: ``module:qualified.name`` -> the first 16 hex digits of sha256(inspect.getsource) at
#: :data:`VERIFIED_TIMM_VERSION`, for every timm object ELSA-VOLO subclasses or relies on
TIMM_UPSTREAM = {
    # the network ELSA-VOLO is: VOLO's constructor, with its Outlooker stage
    'timm.models.volo:VOLO.__init__': 'd858be293a2612be',
    'timm.models.volo:outlooker_blocks': '895610c88c7786b3',
    # the block whose token mixer ELSA replaces, and the mixer it reads the settings of
    'timm.models.volo:Outlooker.__init__': '15563b5c22178e79',
    'timm.models.volo:Outlooker.forward': '4bf4b1d24a08f434',
    'timm.models.volo:OutlookAttention.__init__': 'b8fcc49436146a8e',
    # ELSAVOLO.forward: the class token after VOLO's final norm
    'timm.models.volo:VOLO.forward_features': 'faf1ab9cf51cdfc2',
    'timm.models.volo:VOLO.forward_tokens': '780d293958495369',
    'timm.models.volo:VOLO.forward_cls': '50bba80cbdb32d40',
    'timm.models.volo:VOLO.forward_head': '899a37c33350a981',
    # the timm classifier (timm_entry.py) builds its head with it
    'timm.models.volo:VOLO.reset_classifier': '8f4cbb92544af4f0',
}


def timm_drift():
    """The :data:`TIMM_UPSTREAM` targets whose installed source differs from the one read at
    :data:`VERIFIED_TIMM_VERSION`: ``{target: (expected, found)}``."""
    return drift(TIMM_UPSTREAM)


def check_timm_sources():
    """Raise ImportError, in one line naming the first timm object that differs and the
    supported range, when the installed timm is not what ELSA-VOLO was written against."""
    changed = timm_drift()
    if not changed:
        return
    import timm
    target = next(iter(changed))
    more = f' (and {len(changed) - 1} more of its timm objects)' if len(changed) > 1 else ''
    raise ImportError(
        f'ELSA-VOLO relies on {target}{more} as timm {VERIFIED_TIMM_VERSION} writes it, but '
        f'the installed timm {timm.__version__} has another version of it; mmelsa supports '
        f'{TIMM_REQUIREMENT} with ELSA-VOLO checked against timm {VERIFIED_TIMM_VERSION}: pip '
        f'install "timm=={VERIFIED_TIMM_VERSION}"')
