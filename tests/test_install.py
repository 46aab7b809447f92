"""The environment that tools/setup_env.sh builds: the pinned stack and mmelsa import and work."""
import torch

import mmelsa


def test_version_and_ops_info():
    assert isinstance(mmelsa.__version__, str) and mmelsa.__version__.count('.') == 2
    info = mmelsa.ops.info()
    assert info['ext_loaded'] is True
    assert info['with_cuda'] in (True, False)
    # a CPU-only torch cannot have produced a CUDA-enabled extension
    if torch.version.cuda is None:
        assert info['with_cuda'] is False


def test_pinned_openmmlab_stack_imports_and_mmcv_ops_run():
    import mmcv
    import mmdet
    import mmengine
    import mmseg
    from mmcv.ops import nms

    assert (mmengine.__version__, mmcv.__version__) == ('0.10.7', '2.1.0')
    assert (mmdet.__version__, mmseg.__version__) == ('3.3.0', '1.2.2')
    # three boxes, the second overlaps the first heavily and scores lower: it must be dropped
    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.], [20., 20., 30., 30.]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    dets, keep = nms(boxes, scores, iou_threshold=0.5)
    assert keep.tolist() == [0, 2]
    torch.testing.assert_close(dets[:, 4], torch.tensor([0.9, 0.7]))
