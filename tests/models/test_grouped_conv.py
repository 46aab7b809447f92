"""GroupedConv2d: eager it is nn.Conv2d; exported, its depth-wise spelling is the same
convolution, on NCHW and channels-last maps (float64 reference, any group width it takes,
kernel, stride, dilation, padding, bias), and the ONNX graph holds a depth-wise Conv, not a
grouped one."""
from unittest import mock

import onnx
import onnxruntime
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from mmelsa.deployment import OnnxRunner
from mmelsa.models import grouped_conv
from mmelsa.models.grouped_conv import MAX_EXPORTED_GROUP_WIDTH, GroupedConv2d
from mmelsa.ops.reference import max_rel_err


@settings(max_examples=50, deadline=None)
@given(groups=st.integers(1, 4), width=st.integers(1, MAX_EXPORTED_GROUP_WIDTH + 1),
       k=st.sampled_from([1, 3, 5]), stride=st.integers(1, 2), dilation=st.integers(1, 2),
       padding=st.integers(0, 3), bias=st.booleans(), H=st.integers(9, 12), W=st.integers(9, 12),
       seed=st.integers(0, 2**16))
def test_exported_spelling_is_the_grouped_convolution(groups, width, k, stride, dilation,
                                                      padding, bias, H, W, seed):
    torch.manual_seed(seed)
    C = groups * width
    conv = GroupedConv2d(C, C, k, stride, padding, dilation, groups, bias).double()
    x = torch.randn(2, C, H, W, dtype=torch.float64)
    expected = F.conv2d(x, conv.weight, conv.bias, stride, padding, dilation, groups)
    assert torch.equal(conv(x), expected)  # eager: nn.Conv2d itself
    channels_last = expected.permute(0, 2, 3, 1)
    assert torch.equal(conv.forward_channels_last(x.permute(0, 2, 3, 1)), channels_last)
    assert conv._exports_depthwise() == (groups > 1 and 1 < width <= MAX_EXPORTED_GROUP_WIDTH)
    with mock.patch.object(grouped_conv, 'is_exporting', lambda: True):
        assert max_rel_err(conv(x), expected) < 1e-12
        got = conv.forward_channels_last(x.permute(0, 2, 3, 1))
        assert got.shape == channels_last.shape and max_rel_err(got, channels_last) < 1e-12


@pytest.mark.parametrize('dynamo,optimize', [(True, True), (True, False), (False, None)],
                         ids=['dynamo', 'dynamo-unoptimised', 'legacy'])
def test_export_holds_a_depthwise_conv_and_agrees(tmp_path, dynamo, optimize):
    """The depth-wise Conv's weight is an initializer once ONNX Runtime has folded constants
    (its blocked kernels need that), whichever exporter made the file."""
    torch.manual_seed(0)
    conv = GroupedConv2d(16, 16, 5, padding=2, groups=4).eval()  # 4 channels a group
    x = torch.randn(1, 16, 12, 10)
    path = str(tmp_path / 'conv.onnx')
    if dynamo:
        auto = torch.export.Dim.AUTO
        torch.onnx.export(conv, (x, ), path, dynamo=True, optimize=optimize,
                          dynamic_shapes={'x': {0: auto, 2: auto, 3: auto}})
    else:
        torch.onnx.export(conv, (x, ), path, dynamo=False, opset_version=17, input_names=['x'],
                          dynamic_axes={'x': {0: 'b', 2: 'h', 3: 'w'}})
    groups = [a.i for n in onnx.load(path).graph.node if n.op_type == 'Conv'
              for a in n.attribute if a.name == 'group']
    assert groups == [64]  # 4 rotations of 16 channels, one filter each
    opts = onnxruntime.SessionOptions()
    opts.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    opts.optimized_model_filepath = str(tmp_path / 'folded.onnx')
    onnxruntime.InferenceSession(path, opts, providers=['CPUExecutionProvider'])
    folded = onnx.load(opts.optimized_model_filepath).graph
    convs = [n for n in folded.node if n.op_type == 'Conv']
    assert len(convs) == 1 and convs[0].input[1] in {i.name for i in folded.initializer}
    runner = OnnxRunner(path)
    for shape in [(1, 16, 12, 10), (2, 16, 7, 13)]:
        x = torch.randn(shape)
        with torch.no_grad():
            expected = F.conv2d(x.double(), conv.weight.double(), conv.bias.double(), 1, 2, 1, 4)
        assert max_rel_err(torch.from_numpy(runner(x)[0]), expected) < 1e-5
