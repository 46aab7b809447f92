# MMDeploy deploy config: a whole mmseg segmenter (UPerNet with an ELSA-Swin backbone) to ONNX
# Runtime at a static 192 x 192 input. Static because MMDeploy rewrites the adaptive pooling of
# UPerNet's pyramid pooling module as a fixed pooling: the last feature map (1/32) must divide
# by every pooling scale (1, 2, 3, 6), so H and W are multiples of 192. For another size,
# change input_shape (w, h) to other multiples of 192.
onnx_config = dict(
    type='onnx',
    export_params=True,
    keep_initializers_as_inputs=False,
    opset_version=11,
    save_file='end2end.onnx',
    input_names=['input'],
    output_names=['output'],
    input_shape=[192, 192],
    optimize=True)
codebase_config = dict(type='mmseg', task='Segmentation', with_argmax=False)
backend_config = dict(
    type='onnxruntime',
    model_inputs=[dict(input_shapes=dict(input=[1, 3, 192, 192]))])
