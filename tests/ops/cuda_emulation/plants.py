"""The bugs planted in the CUDA kernels to prove that the emulated-kernel checks can fail.

The kernels in csrc/ hold only the correct expressions. The emulator's build (``plant_tree``,
called by emulate_cuda_kernels.build) compiles a copy of csrc/ in which the place of each bug n
below reads ``ELSA_PLANT(n, good, bad)``: ``good`` unless the emulator's run-time switch
(cuda_shim.h, set_planted_bug) selects bug n. One build thus serves the clean checks and every
planted bug.

A place is named by text: ``context`` must occur exactly once in the file ``path``, and
``good`` (a whole expression, which ``bad`` replaces) exactly once in ``context``. An edit of a
kernel that breaks a place makes the build fail with the bug's number instead of planting
nothing, which would leave the bug's test proving nothing; then update the place here.
"""
import os
import os.path as osp
from typing import NamedTuple


class Plant(NamedTuple):
    path: str  # relative to the source tree
    context: str
    good: str
    bad: str
    what: str  # the bug, in words


KERNELS = 'csrc/common/cuda/elsa_kernel.cuh'
TILED = 'csrc/common/cuda/elsa_tiled_kernel.cuh'
LAUNCHERS = 'csrc/pytorch/cuda/elsa_cuda.cu'

PLANTS = {
    1: Plant(KERNELS,
             'const int64_t o = idx % HoWo;  // idx = (b * G + g) * HoWo + o\n'
             '    const int64_t j = o % D.Wo, i = o / D.Wo;',
             'o % D.Wo', 'o % D.Ho',
             'fused forward: the output column taken modulo the height (a transposed index)'),
    2: Plant(KERNELS, 'if (nx < 0 || nx % D.stride != 0) continue;',
             'nx % D.stride', 'ny % D.stride',
             "plain grad_x gather: the column's stride test made on the row"),
    3: Plant(KERNELS, 'for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync',
             '16', '8',
             'ghost reduction: the warp reduction starts at offset 8, dropping lanes 16-31'),
    4: Plant(LAUNCHERS, 'const int64_t total = kLogits ? D.B * D.G * D.Ho * D.Wo : dst.numel();',
             'D.B * D.G * D.Ho * D.Wo', 'D.B * D.G * D.Ho * D.Wo - 1',
             'fused launcher: launch geometry one pixel short'),
    5: Plant(KERNELS, 'for (int64_t t = 0; t < KK; ++t) dot += prob[off + t * HoWo]',
             '0', '1',
             "fused backward: the softmax backward's dot product misses the first tap"),
    6: Plant(TILED, 'const int y = p.y0 + ty - kHalo, x = p.x0 + tx - kHalo;',
             'p.x0 + tx - kHalo', 'p.x0 + tx - kHalo + 1',
             'tiled: the halo tile staged one column off'),
    7: Plant(TILED, 'acc += gs[p.r + 2 * kHalo - u][p.col + 2 * kHalo - v]',
             'p.col + 2 * kHalo - v', 'p.col + 2 * kHalo - u',
             "tiled grad_x: the gather's column taken with the row's tap"),
    8: Plant(TILED, 'min(int64_t(n_begin) + rows_per_chunk,',
             'int64_t(n_begin) + rows_per_chunk', 'int64_t(n_begin) + rows_per_chunk - 1',
             'tiled ghost reduction: the last row of every chunk dropped'),
    9: Plant(LAUNCHERS, 'const int tiles_h = (T.H + kRows - 1) / kRows;',
             'T.H + kRows - 1', 'T.H',
             'tiled launch geometry: the last, partial row of tiles not launched'),
    10: Plant(TILED, 'for (int t = 0; t < kKK; ++t) dot += prob[t] * g_at[t];',
              '0', '1',
              "tiled fused backward: the softmax backward's dot product misses the first tap"),
    # harmless on NCHW maps, so only the channels-last cases can catch it
    11: Plant(TILED, 'out[p.b * O.b + c * O.c + p.i * O.h + p.j * O.w]',
              'p.i * O.h', 'p.i * T.W',
              'tiled forward, channels-last output: the row stride taken as the NCHW one'),
    # harmless on shared ghosts, so only the per-sample cases (SAMPLE_CASES) can catch these
    12: Plant(KERNELS, 'if (gm) p *= ld<acc_t>(gm, b * D.gm_bstride + (c0 + k) * D.KK + t);',
              'b * D.gm_bstride', '0',
              "plain grad_attn: every sample weighted with the first sample's ghost_mul"),
    13: Plant(KERNELS,
              'const acc_t* src = part + (r % n_rows) * n_chunks + (r / n_rows) * per_group;',
              '(r / n_rows) * per_group', '0',
              "ghost reduction: every sample's per-sample ghost gradient summed from the first "
              "sample's chunks"),
    14: Plant(TILED, 'gms[threadIdx.x] = gm ? ld<acc_t>(gm, b * T.gm_bstride + tc) : acc_t(1);',
              'b * T.gm_bstride + tc', 'tc',
              "tiled: the first sample's ghost_mul row staged for every sample"),
}


class PlantError(ValueError):
    """A planted bug's place is not where PLANTS says (the kernel changed)."""


def plant_file(path, text, plants=PLANTS):
    """``text`` (the source file ``path``, relative to the tree) with the place of every bug of
    ``plants`` in that file turned into its ELSA_PLANT switch."""
    spans = []
    for bug, p in sorted(plants.items()):
        if p.path != path:
            continue
        where = 'planted bug %d (%s): ' % (bug, p.what)
        found = text.count(p.context)
        if found != 1:
            raise PlantError('%sits context occurs %d times in %s, not once: %r (was the kernel '
                             'changed? update PLANTS in tests/ops/cuda_emulation/plants.py)' %
                             (where, found, path, p.context))
        if p.context.count(p.good) != 1:
            raise PlantError('%s%r does not occur exactly once in its context %r' %
                             (where, p.good, p.context))
        start = text.index(p.context) + p.context.index(p.good)
        spans.append((start, start + len(p.good), 'ELSA_PLANT(%d, %s, %s)' % (bug, p.good, p.bad)))
    spans.sort()
    for (_, end, _), (start, _, _) in zip(spans, spans[1:]):
        if start < end:
            raise PlantError('two planted bugs overlap in %s' % path)
    for start, end, switch in reversed(spans):
        text = text[:start] + switch + text[end:]
    return text


def plant_tree(src_root, dest, plants=PLANTS):
    """Copy ``src_root``/csrc to ``dest``/csrc with every planted bug's place switched.

    Only files whose text changed are written, so that the build's incremental compile sees
    unchanged sources as unchanged; files no longer in the source tree are removed.
    """
    src_dir = osp.join(src_root, 'csrc')
    missing = {p.path for p in plants.values()} - {
        osp.relpath(osp.join(d, f), src_root) for d, _, files in os.walk(src_dir) for f in files}
    if missing:
        raise PlantError('planted bugs name files that are not in %s: %s' %
                         (src_root, ', '.join(sorted(missing))))
    wanted = set()
    for d, _, files in os.walk(src_dir):
        for f in files:
            rel = osp.relpath(osp.join(d, f), src_root)
            with open(osp.join(src_root, rel), encoding='utf-8') as fh:
                text = plant_file(rel, fh.read(), plants)
            target = osp.join(dest, rel)
            wanted.add(target)
            if osp.isfile(target):
                with open(target, encoding='utf-8') as fh:
                    if fh.read() == text:
                        continue
            os.makedirs(osp.dirname(target), exist_ok=True)
            with open(target, 'w', encoding='utf-8') as fh:
                fh.write(text)
    for d, _, files in os.walk(osp.join(dest, 'csrc')):
        for f in files:
            if osp.join(d, f) not in wanted:
                os.remove(osp.join(d, f))
    return osp.join(dest, 'csrc')
