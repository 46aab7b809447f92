"""Does the scaled ReLU make training robust at toy scale? ("Scaled ReLU Matters for Training
Vision Transformers", arXiv 2109.03810: a patchify stem makes a ViT's training fragile to the
learning rate and warm-up; convolutions in the stem alone do not fix it, their BatchNorm + ReLU
does, and the stem's patch tokens become more diverse.)

Trains the toy classifier (the 64 px toy shape set, ``python -m mmelsa.datasets.toy --kind
cls``) from scratch for every combination of

* model: ``elsa-swin`` (the toy classifier's backbone: ELSA-Swin with embed 32, depths
  1-1-2-1, patch 4) and ``vit`` (mmpretrain's VisionTransformer: embed 64, 4 layers, 4 heads,
  patch 8, mean-pooled tokens), each with a linear head;
* stem: ``patchify`` (the single convolution of kernel = stride = patch), ``conv`` (ConvStem
  without BatchNorm and ReLU: the paper's "convolutions without scaled ReLU") and
  ``conv-bn-relu`` (ConvStem as the paper builds it); the stem's width is the model's
  embedding width (32 / 64; the paper's 64 at ImageNet scale);
* learning rate (``--lrs``) and warm-up (``--warmups``, iterations of linear warm-up from
  1% of the rate; 0 = none), then cosine decay to zero;

with AdamW (weight decay 0.05 on weights of rank >= 2), batch 32, random horizontal flips, no
gradient clipping (it would hide the divergence the study looks for), the same seed for every
run (same data order, same head initialisation). Each row reports:

* ``top-1``: accuracy on the 300 validation images after the last iteration (chance: 33.3%);
* ``status``: ``nan`` (a non-finite loss; the run stops there), ``chance`` (the mean training
  loss of the last tenth of the run did not fall below ln 3 - 0.05, that of guessing) or ``ok``;
* ``cos init`` / ``cos end``: token similarity, the mean pairwise cosine similarity of the
  stem's output tokens (patch embedding output, before any position embedding) over all pairs
  of distinct tokens of an image, averaged over 100 validation images, at initialisation and
  after training. Lower means more diverse tokens.

Examples:
    python tools/analysis_tools/stem_study.py --threads 2 --plot docs/images/stem_study.png
    python tools/analysis_tools/stem_study.py --models vit --lrs 1e-3 --iters 100
"""
import argparse
import json
import math
import os
import os.path as osp
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmelsa.cli import positive_int

MODELS = ('elsa-swin', 'vit')
STEMS = ('patchify', 'conv', 'conv-bn-relu')
MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)
NUM_CLASSES = 3  # mmelsa.datasets.toy.CLS_CLASSES


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data', default='data/toy_cls',
                   help='toy classification set (generated there when missing)')
    p.add_argument('--models', nargs='+', choices=MODELS, default=list(MODELS))
    p.add_argument('--stems', nargs='+', choices=STEMS, default=list(STEMS))
    p.add_argument('--lrs', nargs='+', type=float, default=[3e-4, 1e-3, 3e-3, 1e-2])
    p.add_argument('--warmups', nargs='+', type=int, default=[0, 100],
                   help='iterations of linear warm-up (0: none)')
    p.add_argument('--iters', type=positive_int, default=600)
    p.add_argument('--batch', type=positive_int, default=32)
    p.add_argument('--num-train', type=positive_int, default=None,
                   help='use the first N training images (default: all)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--threads', type=positive_int, default=None)
    p.add_argument('--out', default='work_dirs/stem_study/results.json',
                   help='rows as JSON (rewritten after every run)')
    p.add_argument('--plot', default=None, help='draw the results to this image file')
    return p.parse_args(argv)


def load_split(root, split, limit=None):
    """(N, 3, 64, 64) uint8 RGB images and (N,) int64 labels of mmpretrain's layout."""
    from PIL import Image
    with open(osp.join(root, 'meta', split + '.txt')) as f:
        entries = [line.split() for line in f if line.strip()][:limit]
    images = np.stack([np.asarray(Image.open(osp.join(root, split, name)).convert('RGB'))
                       for name, _ in entries])
    labels = torch.tensor([int(label) for _, label in entries])
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), labels


def normalise(images):
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (images.float() - mean) / std


def stem_config(stem, width):
    """ConvStem arguments of a stem kind at a width, None for the patchify convolution."""
    if stem == 'patchify':
        return None
    cfg = dict(stem_channels=(width, ) * 3)
    if stem == 'conv':
        cfg.update(norm_cfg=None, act_cfg=None)
    return cfg


class Classifier(nn.Module):
    """A backbone, global average pooling of its last map / its tokens, a linear head;
    ``patch_embed`` is the module whose output tokens the similarity is measured on."""

    def __init__(self, model, stem):
        super().__init__()
        if model == 'elsa-swin':
            from mmelsa.models import ELSASwinTransformer
            self.backbone = ELSASwinTransformer(
                embed_dims=32, depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8], window_size=4,
                elsa_kernel_size=5, group_width=4, drop_path_rate=0.0, out_indices=(3, ),
                init_cfg=None, conv_stem=stem_config(stem, 32))
            width = 256
        else:
            from mmelsa.models.conv_stem_vit import ConvStemVisionTransformer
            from mmpretrain.models.backbones import VisionTransformer
            arch = dict(embed_dims=64, num_layers=4, num_heads=4, feedforward_channels=256)
            kwargs = dict(arch=arch, img_size=64, patch_size=8, out_type='avg_featmap',
                          with_cls_token=False, drop_path_rate=0.0)
            conv_stem = stem_config(stem, 64)
            self.backbone = VisionTransformer(**kwargs) if conv_stem is None else \
                ConvStemVisionTransformer(conv_stem=conv_stem, **kwargs)
            self.backbone.init_weights()
            width = 64
        self.patch_embed = self.backbone.patch_embed
        self.head = nn.Linear(width, NUM_CLASSES)

    def forward(self, x):
        feat = self.backbone(x)[-1]
        if feat.dim() == 4:
            feat = feat.mean((2, 3))
        return self.head(feat)


def token_similarity(tokens):
    """Mean pairwise cosine similarity of distinct tokens, averaged over images.

    tokens: (B, N, D) or a map (B, Hp, Wp, D) / (B, D, Hp, Wp) flattened by the caller.
    """
    t = F.normalize(tokens.double(), dim=-1)
    n = t.shape[1]
    gram = t @ t.transpose(1, 2)  # (B, N, N), ones on the diagonal
    return float(((gram.sum((1, 2)) - n) / (n * (n - 1))).mean())


def stem_tokens(model, images):
    """The patch embedding's output tokens (B, N, D) for a batch of images."""
    seen = []
    handle = model.patch_embed.register_forward_hook(lambda m, i, o: seen.append(o))
    try:
        model(images)
    finally:
        handle.remove()
    out = seen[0][0] if isinstance(seen[0], tuple) else seen[0]  # mmpretrain: (tokens, size)
    return out.flatten(1, 2) if out.dim() == 4 else out  # ELSA-Swin: (B, Hp, Wp, D)


@torch.no_grad()
def evaluate(model, images, labels, batch=100):
    model.eval()
    correct = 0
    for i in range(0, len(images), batch):
        logits = model(normalise(images[i:i + batch]))
        correct += int((logits.argmax(1) == labels[i:i + batch]).sum())
    return correct / len(images)


@torch.no_grad()
def similarity(model, images):
    model.eval()
    return token_similarity(stem_tokens(model, normalise(images)))


def lr_at(it, lr, warmup, iters):
    """Linear warm-up from 1% of lr over `warmup` iterations, then cosine decay to 0."""
    if it < warmup:
        return lr * (0.01 + 0.99 * it / warmup)
    return lr * 0.5 * (1 + math.cos(math.pi * (it - warmup) / max(1, iters - warmup)))


def train_one(model_name, stem, lr, warmup, args, train, val):
    torch.manual_seed(args.seed)
    model = Classifier(model_name, stem)
    probe = val[0][:100]
    cos_init = similarity(model, probe)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optim = torch.optim.AdamW([dict(params=decay, weight_decay=0.05),
                               dict(params=no_decay, weight_decay=0.0)], lr=lr)
    images, labels = train
    order = torch.Generator().manual_seed(args.seed)
    losses, status, start = [], 'ok', time.perf_counter()
    model.train()
    for it in range(args.iters):
        for group in optim.param_groups:
            group['lr'] = lr_at(it, lr, warmup, args.iters)
        idx = torch.randint(len(images), (args.batch, ), generator=order)
        x = normalise(images[idx])
        flip = torch.rand(args.batch, generator=order) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
        loss = F.cross_entropy(model(x), labels[idx])
        if not torch.isfinite(loss):
            status = 'nan'
            break
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        losses.append(float(loss))
    seconds = time.perf_counter() - start
    tail = losses[-max(1, len(losses) // 10):]
    if status == 'ok' and sum(tail) / len(tail) >= math.log(NUM_CLASSES) - 0.05:
        status = 'chance'
    top1 = evaluate(model, *val) if status != 'nan' else None
    cos_end = similarity(model, probe) if status != 'nan' else None
    return dict(model=model_name, stem=stem, lr=lr, warmup=warmup, iters=args.iters,
                batch=args.batch, top1=top1, status=status, cos_init=cos_init,
                cos_end=cos_end, final_loss=tail[-1] if tail else None, seconds=seconds)


def fmt(value, spec):
    return '-' if value is None else spec % value


def table(rows):
    lines = ['| model | stem | lr | warm-up | top-1 (%) | status | cos init | cos end | s |',
             '|---|---|---|---|---|---|---|---|---|']
    for r in rows:
        lines.append('| %s | %s | %g | %d | %s | %s | %s | %s | %.0f |' % (
            r['model'], r['stem'], r['lr'], r['warmup'], fmt(r['top1'] and 100 * r['top1'],
                                                            '%.1f'),
            r['status'], fmt(r['cos_init'], '%.3f'), fmt(r['cos_end'], '%.3f'), r['seconds']))
    return '\n'.join(lines)


def plot(rows, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    models = sorted({r['model'] for r in rows}, key=MODELS.index)
    warmups = sorted({r['warmup'] for r in rows})
    cols = len(warmups) + 1
    fig, axes = plt.subplots(len(models), cols, figsize=(4 * cols, 3.2 * len(models)),
                             squeeze=False)
    for i, model in enumerate(models):
        for stem in STEMS:
            mine = [r for r in rows if r['model'] == model and r['stem'] == stem]
            for j, warmup in enumerate(warmups):
                pts = sorted((r['lr'], r) for r in mine if r['warmup'] == warmup)
                if not pts:
                    continue
                ax = axes[i][j]
                line, = ax.plot([lr for lr, _ in pts],
                                [100 * (r['top1'] or 0) for _, r in pts], marker='o', label=stem)
                bad = [(lr, 100 * (r['top1'] or 0)) for lr, r in pts if r['status'] != 'ok']
                if bad:
                    ax.scatter(*zip(*bad), marker='x', s=80, color=line.get_color())
                ax.set_title('%s, warm-up %d it.' % (model, warmup), fontsize=9)
            pts = sorted((r['lr'], r['cos_end']) for r in mine
                         if r['warmup'] == warmups[-1] and r['cos_end'] is not None)
            if pts:
                axes[i][-1].plot(*zip(*pts), marker='o', label=stem)
            axes[i][-1].set_title('%s: token similarity after training\n(warm-up %d it.)'
                                  % (model, warmups[-1]), fontsize=9)
        for j, ax in enumerate(axes[i]):
            ax.set_xscale('log')
            ax.set_xlabel('learning rate')
            ax.set_ylabel('top-1 (%)' if j < cols - 1 else 'mean pairwise cosine')
            if j < cols - 1:
                ax.axhline(100 / NUM_CLASSES, color='grey', lw=0.8, ls=':')
                ax.set_ylim(0, 102)
            ax.legend(fontsize=7)
    fig.suptitle('x: diverged (nan) or stuck at chance', fontsize=9)
    fig.tight_layout()
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not osp.isfile(osp.join(args.data, 'meta', 'train.txt')):
        from mmelsa.datasets.toy import generate_toy_cls
        generate_toy_cls(osp.dirname(osp.abspath(args.data)) or '.')
    train = load_split(args.data, 'train', args.num_train)
    val = load_split(args.data, 'val')
    print('torch %s, %d threads, float32, CPU; %d training / %d validation images, '
          '%d iterations of batch %d' % (torch.__version__, torch.get_num_threads(),
                                         len(train[0]), len(val[0]), args.iters, args.batch))
    rows = []
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    for model in args.models:
        for warmup in args.warmups:
            for lr in args.lrs:
                for stem in args.stems:
                    rows.append(train_one(model, stem, lr, warmup, args, train, val))
                    print(table(rows[-1:]).splitlines()[-1], flush=True)
                    with open(args.out, 'w') as f:
                        json.dump(rows, f, indent=1)
    print(table(rows))
    if args.plot:
        plot(rows, args.plot)
        print('plot: %s' % args.plot)
    return rows


if __name__ == '__main__':
    main()
