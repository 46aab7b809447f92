"""What the checkpoint converters (tools/model_converters/) share: their arguments, the safe
read of the source, the refusal to replace a file without ``--overwrite``, the atomic write.

    python tools/model_converters/<tool>.py SRC DST [--backbone-only] [--trust-checkpoint SRC]
        [--overwrite]
"""
import argparse
import os.path as osp
import sys

import torch

from ..checkpoint import CheckpointError, read_checkpoint_file
from ..engine import atomic_write
from .common import trust_checkpoints

__all__ = ['converter_parser', 'run_conversion']


def converter_parser(description, backbone_only_help):
    """The converters' argument parser: SRC, DST and the three options."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('src', help='official checkpoint')
    parser.add_argument('dst', help='where to save the converted checkpoint')
    parser.add_argument('--trust-checkpoint', action='append', default=[], metavar='CKPT',
                        help='allow a full unpickle of this file (SRC, if you trust it), which '
                             'can run code stored in it (as in tools/train.py and test.py)')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing DST')
    parser.add_argument('--backbone-only', action='store_true', help=backbone_only_help)
    return parser


def run_conversion(args, convert):
    """Read ``args.src`` through the checkpoint gate, ``convert(checkpoint, backbone_only)`` ->
    (converted dict, dropped keys), write it to ``args.dst``; a refusal exits with one line."""
    if osp.exists(args.dst) and not args.overwrite:
        sys.exit(f'error: {args.dst} exists; pass --overwrite to replace it')
    try:
        trust_checkpoints(args.trust_checkpoint)
        checkpoint = read_checkpoint_file(args.src, map_location='cpu')
    except (CheckpointError, FileNotFoundError) as err:  # these name the file
        sys.exit(f'error: {err}')
    try:
        converted, dropped = convert(checkpoint, backbone_only=args.backbone_only)
    except (TypeError, ValueError) as err:
        sys.exit(f'error: {args.src}: {err}')
    atomic_write(args.dst, lambda f: torch.save(converted, f))
    print(f'{args.src} -> {args.dst}: {len(converted["state_dict"])} tensors kept, '
          f'{len(dropped)} dropped' + (f' (e.g. {dropped[:3]})' if dropped else ''))
    return converted
