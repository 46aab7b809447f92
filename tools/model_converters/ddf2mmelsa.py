"""Convert an official DDF-ResNet checkpoint (the authors' release) for mmelsa's configs.

    python tools/model_converters/ddf2mmelsa.py SRC DST [--backbone-only]
        [--trust-checkpoint SRC] [--overwrite]

The release's files hold timm ResNet keys (at top level, under ``state_dict`` or ``model``,
possibly ``module.``-prefixed) with ``fc.*`` as the classifier. The result is the whole
mmpretrain classifier of configs/ddf_resnet (backbone keys under ``backbone.``, ``fc.*`` as
``head.fc.*``), which loads strictly there, so ``tools/test.py CONFIG DST`` reports its top-1;
``--backbone-only`` writes the bare ``DDFResNet`` instead (for ``init_cfg=dict(type=
'Pretrained', ...)`` in detection and segmentation; the backbone's ``Pretrained`` also reads
the whole file with ``prefix='backbone.'``).

The source is read by mmelsa's checkpoint gate: a file with pickled objects beyond tensors and
plain containers (timm's training script stores its ``argparse.Namespace`` as ``args``) is
refused unless you pass ``--trust-checkpoint SRC`` for a file you trust. Only the weights are
written: DST is plain tensors, written atomically, and an existing DST is replaced only with
``--overwrite``.
"""
from mmelsa.cli.conversion import converter_parser, run_conversion
from mmelsa.models.ddf_weights import convert_ddf_resnet_state_dict


def convert(checkpoint, backbone_only=False):
    """``({'state_dict': ..., 'meta': ...}, dropped keys)`` of a release DDF-ResNet file."""
    state_dict, dropped = convert_ddf_resnet_state_dict(checkpoint, backbone_only)
    meta = dict(converted_by='mmelsa tools/model_converters/ddf2mmelsa.py')
    return dict(state_dict=state_dict, meta=meta), dropped


def main(argv=None):
    args = converter_parser(
        'Convert an official DDF-ResNet checkpoint into one the mmelsa DDF-ResNet configs '
        '(mmpretrain) load strictly.',
        'write the bare DDFResNet backbone (no fc) instead of the whole mmpretrain '
        'classifier').parse_args(argv)
    return run_conversion(args, convert)


if __name__ == '__main__':
    main()
