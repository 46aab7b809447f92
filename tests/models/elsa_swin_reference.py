"""Independent functional reference of ELSA-Swin, written from docs/elsa_facts.md.

Plain PyTorch functions that read the weights by their official state-dict names; no code is
shared with ``mmelsa.models``. Where the model has a fast formulation, this file uses a
different, literal one on purpose (explicit per-window loops, masks from region membership,
position bias from coordinates, merging by reshapes), so that a mistake is unlikely to be made
twice. The ELSA operator itself comes from ``mmelsa/ops/reference.py`` (unfold).
Run it in float64.
"""
import math

import torch
import torch.nn.functional as F

from mmelsa.ops.reference import elsa_reference


def layer_norm(x, sd, name):
    """LayerNorm (eps 1e-5) over the last dim with ``name.weight`` / ``name.bias``."""
    return F.layer_norm(x, x.shape[-1:], sd[name + '.weight'], sd[name + '.bias'], eps=1e-5)


def linear(x, sd, name):
    w = sd[name + '.weight']
    b = sd.get(name + '.bias')
    y = x @ w.t()
    return y if b is None else y + b


def mlp(x, sd, name):
    return linear(F.gelu(linear(x, sd, name + '.fc1')), sd, name + '.fc2')


def ghosts_from_head(gh, lam, gamma):
    """(ghost_mul ** lam, ghost_add * gamma) per docs/elsa_facts.md, each (C, K, K) or None."""
    if gh is None or (lam == 0 and gamma == 0):
        return None, None
    if lam != 0 and gamma != 0:
        assert gh.dim() == 5 and gh.shape[:2] == (2, 1)
        return gh[0, 0]**lam, gh[1, 0] * gamma
    assert gh.dim() == 4 and gh.shape[0] == 1
    if lam != 0:
        return gh[0]**lam, None
    return None, gh[0] * gamma


def elsa_ref(x, sd, name, num_heads, kernel_size, lam=0., gamma=1., dilation=1):
    """ELSA on channels-last x (B, H, W, C); weights under ``name`` (e.g. '...attn')."""
    B, H, W, C = x.shape
    K, d = kernel_size, dilation
    xc = x.permute(0, 3, 1, 2)
    y = F.conv2d(xc, sd[name + '.pre_proj.weight'], sd.get(name + '.pre_proj.bias'))
    dim_qk = (y.shape[1] - C) // 2
    # dim_qk = (C // 3) * 2 rounded up to the group width (docs/elsa_facts.md, section 2)
    gw = sd[name + '.attn.0.weight'].shape[1]
    assert dim_qk == math.ceil((C // 3) * 2 / gw) * gw
    q, k, v = y[:, :dim_qk], y[:, dim_qk:2 * dim_qk], y[:, 2 * dim_qk:]
    h = q * k * 1.0
    h = F.conv2d(h, sd[name + '.attn.0.weight'], sd[name + '.attn.0.bias'],
                 padding=(K // 2) * d, dilation=d, groups=dim_qk // gw)
    h = F.gelu(h)
    a = F.conv2d(h, sd[name + '.attn.2.weight'], sd[name + '.attn.2.bias'])
    # head g owns channels [g*K*K, (g+1)*K*K): softmax each head's block of K*K channels
    heads = [a[:, g * K * K:(g + 1) * K * K].softmax(dim=1) for g in range(num_heads)]
    a = torch.stack(heads, dim=1)  # (B, G, K*K, H, W)
    gm, ga = ghosts_from_head(sd.get(name + '.ghost_head'), lam, gamma)
    out = elsa_reference(v, a, gm, ga, kernel_size=K, dilation=d, stride=1)
    return linear(out.permute(0, 2, 3, 1), sd, name + '.post_proj')


def elsa_block_ref(x, sd, name, num_heads, kernel_size, lam=0., gamma=1.):
    x = x + elsa_ref(layer_norm(x, sd, name + '.norm1'), sd, name + '.attn', num_heads,
                     kernel_size, lam, gamma)
    return x + mlp(layer_norm(x, sd, name + '.norm2'), sd, name + '.mlp')


def window_attention_ref(x, sd, name, num_heads, window, shift, qk_scale=None):
    """Shifted-window attention on channels-last, already padded x (B, Hp, Wp, C), computed
    window by window. Rolled frame: position r holds padded position (r + shift) % Hp."""
    B, Hp, Wp, C = x.shape
    w, s, G = window, shift, num_heads
    hd = C // G
    scale = qk_scale or hd**-0.5
    rows = [(r + s) % Hp for r in range(Hp)]
    cols = [(c + s) % Wp for c in range(Wp)]
    xr = x[:, rows][:, :, cols]
    proj = linear(xr, sd, name + '.pre_proj')
    v, q, k = proj[..., :C], proj[..., C:2 * C], proj[..., 2 * C:]  # v, q, k order
    rb = sd[name + '.rb']  # (G, (2w-1)^2)
    out = torch.zeros_like(xr)
    pos = [(i, j) for i in range(w) for j in range(w)]
    yn = torch.tensor([p[0] for p in pos])
    xn = torch.tensor([p[1] for p in pos])
    # bias[g, n, m] = rb[g, (y_n - y_m + w - 1) * (2w - 1) + (x_n - x_m + w - 1)]
    table = (yn[:, None] - yn[None, :] + w - 1) * (2 * w - 1) + \
        (xn[:, None] - xn[None, :] + w - 1)
    bias = rb[:, table]
    for wy in range(0, Hp, w):
        for wx in range(0, Wp, w):
            toks = [(wy + i, wx + j) for i, j in pos]
            mask = torch.zeros(w * w, w * w, dtype=x.dtype)
            if s > 0:
                # tokens that wrapped around in the roll came from another image region
                wr = torch.tensor([r >= Hp - s for r, _ in toks])
                wc = torch.tensor([c >= Wp - s for _, c in toks])
                differ = (wr[:, None] != wr[None, :]) | (wc[:, None] != wc[None, :])
                mask[differ] = -100.
            ys = torch.tensor([t[0] for t in toks])
            xs = torch.tensor([t[1] for t in toks])
            Q = q[:, ys, xs].reshape(B, w * w, G, hd).transpose(1, 2)
            Kt = k[:, ys, xs].reshape(B, w * w, G, hd).transpose(1, 2)
            V = v[:, ys, xs].reshape(B, w * w, G, hd).transpose(1, 2)
            logits = Q @ Kt.transpose(-1, -2) * scale + bias + mask
            o = (logits.softmax(-1) @ V).transpose(1, 2).reshape(B, w * w, C)
            out[:, ys, xs] = linear(o, sd, name + '.post_proj')
    # undo the roll
    res = torch.empty_like(out)
    res[:, rows] = out.clone()
    res2 = torch.empty_like(res)
    res2[:, :, cols] = res
    return res2


def swin_block_ref(x, sd, name, num_heads, window, shift, qk_scale=None):
    B, H, W, C = x.shape
    y = layer_norm(x, sd, name + '.norm1')
    Hp, Wp = math.ceil(H / window) * window, math.ceil(W / window) * window
    yp = x.new_zeros(B, Hp, Wp, C)
    yp[:, :H, :W] = y
    a = window_attention_ref(yp, sd, name + '.attn', num_heads, window,
                             window // 2 if shift else 0, qk_scale)
    x = x + a[:, :H, :W]
    return x + mlp(layer_norm(x, sd, name + '.norm2'), sd, name + '.mlp')


def patch_merge_ref(x, sd, name):
    B, H, W, C = x.shape
    H2, W2 = H + H % 2, W + W % 2
    xp = x.new_zeros(B, H2, W2, C)
    xp[:, :H, :W] = x
    # (B, H/2, row parity, W/2, col parity, C); the merging order is (r,c) = 00, 10, 01, 11,
    # i.e. column parity major
    t = xp.reshape(B, H2 // 2, 2, W2 // 2, 2, C).permute(0, 1, 3, 4, 2, 5)
    t = t.reshape(B, H2 // 2, W2 // 2, 4 * C)
    return linear(layer_norm(t, sd, name + '.norm'), sd, name + '.reduction')


def backbone_ref(img, sd, depths, num_heads, kernel_size=7, window=7, elsa_stages=(0, 1, 2),
                 out_indices=(0, 1, 2, 3), lam=0., gamma=1., patch=4, pad_small_map=True):
    """pad_small_map=False: the official classifier's rule, no shift in a block whose map is not
    larger than the window (its SwinTransformerBlock sets shift_size = 0 there)."""
    B, _, H, W = img.shape
    Hp, Wp = math.ceil(H / patch) * patch, math.ceil(W / patch) * patch
    xp = img.new_zeros(B, img.shape[1], Hp, Wp)
    xp[:, :, :H, :W] = img
    x = F.conv2d(xp, sd['patch_embed.proj.weight'], sd['patch_embed.proj.bias'], stride=patch)
    x = layer_norm(x.permute(0, 2, 3, 1), sd, 'patch_embed.norm')
    if 'absolute_pos_embed' in sd:
        # one embedding per patch, token (i, j) being row i * w + j of the (1, h*w, C) table
        # (mmdet's Swin flattens its patch grid row-major)
        h, w = x.shape[1:3]
        token = torch.arange(h)[:, None] * w + torch.arange(w)[None, :]
        x = x + sd['absolute_pos_embed'][0][token]
    outs = []
    for i, depth in enumerate(depths):
        for j in range(depth):
            name = f'layers.{i}.blocks.{j}'
            if i in elsa_stages:
                x = elsa_block_ref(x, sd, name, num_heads[i], kernel_size, lam, gamma)
            else:
                small = min(x.shape[1], x.shape[2]) <= window and not pad_small_map
                x = swin_block_ref(x, sd, name, num_heads[i], window,
                                   shift=j % 2 == 1 and not small)
        if i in out_indices:
            outs.append(layer_norm(x, sd, f'norm{i}').permute(0, 3, 1, 2))
        if i < len(depths) - 1:
            x = patch_merge_ref(x, sd, f'layers.{i}.downsample')
    return outs


def random_state_dict(model, seed=0, dtype=torch.float64):
    """Random weights of sensible scale for every floating tensor of ``model``'s state dict
    (norm weights around 1, biases small, matrices ~ 1/sqrt(fan_in)); integer buffers such as
    ``relative_id`` are kept."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, v in model.state_dict().items():
        if not v.is_floating_point():
            sd[k] = v.clone()
            continue
        r = torch.randn(v.shape, generator=g, dtype=dtype)
        if k.endswith('ghost_head'):
            r = r * 0.3
        elif k.endswith('.rb'):
            r = r * 0.5
        elif v.dim() == 1 and ('norm' in k) and k.endswith('.weight'):
            r = 1 + 0.2 * r
        elif v.dim() == 1:
            r = 0.2 * r
        else:
            r = r / math.sqrt(v[0].numel())
        sd[k] = r
    return sd
