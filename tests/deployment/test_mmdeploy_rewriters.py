"""The post-processing rewriters of :mod:`mmelsa.deployment.mmdeploy_compat` are registered for
ONNX Runtime only while its context lasts, and MMDeploy still has what they replace."""
import inspect

from mmelsa.deployment import mmdeploy_compat as compat


def _ours_registered():
    from mmdeploy.core import FUNCTION_REWRITER
    ours = {compat._cascade_predict_bbox, compat._rpn_predict_by_feat,
            compat._bbox_predict_by_feat}
    return {rec['_object'] for recs in FUNCTION_REWRITER._registry._rewrite_records.values()
            for rec in recs} & ours


def test_rewriters_only_inside_the_context():
    assert not _ours_registered()
    with compat.mmdeploy_compat():
        assert len(_ours_registered()) == 3
    assert not _ours_registered()


def test_what_the_rewriters_replace_is_still_there():
    """Fails when MMDeploy changes the rewriters ours stand in for (then revisit them)."""
    from mmdeploy.codebase.mmdet.models.dense_heads import rpn_head
    from mmdeploy.codebase.mmdet.models.roi_heads import bbox_head
    box = inspect.getsource(bbox_head.bbox_head__predict_by_feat)
    assert 'only keep boxes with the max scores' in box  # one box per RoI, all classes
    rpn = inspect.getsource(rpn_head.rpn_head__predict_by_feat)
    assert 'level_ids' not in rpn and 'min_bbox_size' not in rpn  # no per level, no filter
