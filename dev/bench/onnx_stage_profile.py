"""Where ONNX Runtime spends its time in Swin-T and ELSA-Swin-T, stage by stage.

Both backbones (the shapes of ``tools/analysis_tools/benchmark_backbone.py``) are exported as
that tool exports them (TorchScript, opset 17) and run with ONNX Runtime's profiler on (CPU);
each node's kernel time is given to the block part its name lies in: a block's attention
(its first norm included) or its MLP (second norm, and a following patch merging, included).
The two sessions run in turn (``--reps`` rounds after one warm-up run each); each part's time is
its median over the runs, and the total the sum of the parts' medians. With the profiler on
they are a little higher than unprofiled latencies.
docs/benchmarks.md records a run.

    python dev/bench/onnx_stage_profile.py --size 512 --threads 2
"""
import argparse
import collections
import json
import os.path as osp
import re
import statistics
import sys
import tempfile

import onnxruntime as ort
import torch

from mmelsa.cli import positive_int

sys.path.insert(0, osp.join(osp.dirname(__file__), '..', '..', 'tools', 'analysis_tools'))
from benchmark_backbone import NAMES, TYPES, build_backbone  # noqa: E402

#: a node of stage s, block b: mmdet's Swin names its stages 'stages', ours 'layers'
BLOCK = re.compile(r'/(?:stages|layers)\.(\d+)/blocks\.(\d+)/(attn|norm1|ffn|mlp|norm2)')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--size', type=positive_int, default=224, help='square input side')
    p.add_argument('--threads', type=positive_int, default=2)
    p.add_argument('--reps', type=positive_int, default=10)
    return p.parse_args(argv)


def part_times(events, reps):
    """Milliseconds per run of each (stage, block, 'attn' | 'mlp') part; nodes before the first
    block go to ('stem', '', '')."""
    part, ms = ('stem', '', ''), collections.Counter()
    for e in events:
        if e.get('cat') != 'Node' or not e['name'].endswith('_kernel_time'):
            continue
        m = BLOCK.search(e['name'])
        if m:  # unnamed nodes (layout reorders ONNX Runtime inserts) stay with the last part
            part = (int(m.group(1)), int(m.group(2)),
                    'attn' if m.group(3) in ('attn', 'norm1') else 'mlp')
        ms[part] += e['dur'] / 1e3 / reps
    return ms


def profiled_session(model, x, threads, tmp, name):
    """An ONNX Runtime session, profiler on, on ``model`` exported as the benchmark does."""
    path = osp.join(tmp, name + '.onnx')
    model.eval()
    with torch.no_grad():
        torch.onnx.export(model, (x, ), path, dynamo=False, opset_version=17,
                          input_names=['x'])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.enable_profiling = True
    opts.profile_file_prefix = osp.join(tmp, name)
    return ort.InferenceSession(path, opts, providers=['CPUExecutionProvider'])


def profile_interleaved(sessions, x, reps):
    """Run the sessions in turn (one warm-up run each, then ``reps`` rounds, so that a change of
    load hits all alike) and return each one's part times: per part, the median over the runs
    (a run slowed by the machine moves a mean, not a median)."""
    feed = {'x': x.numpy()}
    for _ in range(1 + reps):
        for sess in sessions:
            sess.run(None, feed)
    times = []
    for sess in sessions:
        with open(sess.end_profiling()) as f:
            events = json.load(f)
        # ONNX Runtime writes one 'model_run' event per run: the first is the warm-up
        runs = [e for e in events if e.get('name') == 'model_run'][1:]
        per_run = [part_times([e for e in events
                               if r['ts'] <= e.get('ts', -1) <= r['ts'] + r['dur']], 1)
                   for r in runs]
        parts = set().union(*per_run)
        times.append({p: statistics.median(t.get(p, 0.0) for t in per_run) for p in parts})
    return times


def main(argv=None):
    args = parse_args(argv)
    torch.manual_seed(0)
    x = torch.randn(1, 3, args.size, args.size)
    with tempfile.TemporaryDirectory() as tmp:
        sessions = [profiled_session(build_backbone(t, False), x, args.threads, tmp, n)
                    for n, t in zip(NAMES, TYPES)]
        times = profile_interleaved(sessions, x, args.reps)
    print(f'# ONNX Runtime {ort.__version__}, {args.threads} thread(s), 1 x 3 x {args.size} x '
          f'{args.size}, float32, profiled, ms per run (median of {args.reps})')
    print(f'| stage | part | {NAMES[0]} | {NAMES[1]} | difference |')
    print('|---|---|---|---|---|')
    stages = sorted({p[0] for t in times for p in t if p[0] != 'stem'})
    for stage in stages:
        for kind in ('attn', 'mlp'):
            ms = [sum(v for p, v in t.items() if p[0] == stage and p[2] == kind)
                  for t in times]
            print(f'| {stage} | {kind} | {ms[0]:.2f} | {ms[1]:.2f} | {ms[1] - ms[0]:+.2f} |')
    total = [sum(t.values()) for t in times]
    print(f'| all | (with the stem) | {total[0]:.2f} | {total[1]:.2f} | '
          f'{total[1] - total[0]:+.2f} |')


if __name__ == '__main__':
    main()
