"""ELSAAttention uses the fused softmax + ELSA operator whenever the attention dropout is
inactive: a profile of ELSASwinTransformer in eval mode shows no separate softmax over the taps,
and the fused module agrees with the softmax-then-operator path and with the float64 reference.
"""
import torch
from torch.profiler import ProfilerActivity, profile

from mmelsa.models import ELSASwinTransformer
from mmelsa.models.elsa_attention import ELSAAttention
from mmelsa.ops.reference import elsa_reference, max_rel_err


def _op_counts(fn):
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    counts = {}
    for e in prof.events():
        counts[e.name] = counts.get(e.name, 0) + 1
    return counts


def _softmaxes(counts):
    return {k: v for k, v in counts.items() if 'softmax' in k and 'elsa' not in k}


def test_swin_eval_profile_has_no_tap_softmax():
    """ELSA blocks (stages 1-3) use the fused op; the only softmaxes left are those of the
    window attention of stage 4 (one per block, over the window's keys)."""
    torch.manual_seed(0)
    depths = (1, 1, 2, 2)
    model = ELSASwinTransformer(embed_dims=16, depths=depths, num_heads=(1, 2, 2, 4),
                                window_size=7, elsa_kernel_size=5, group_width=4,
                                attn_drop_rate=0.1).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        counts = _op_counts(lambda: model(x))
    n_elsa = sum(depths[:3])
    assert counts.get('mmelsa::elsa_softmax_forward', 0) == n_elsa, counts
    assert counts.get('mmelsa::elsa_forward', 0) == 0
    # aten::softmax (and its _softmax kernel) only from the depths[3] window-attention blocks
    softmaxes = _softmaxes(counts)
    assert softmaxes.get('aten::softmax', 0) == depths[3], softmaxes


def test_training_with_dropout_uses_the_unfused_path():
    torch.manual_seed(0)
    m = ELSAAttention(12, 3, kernel_size=3, group_width=4, attn_drop=0.5).train()
    counts = _op_counts(lambda: m(torch.randn(1, 6, 5, 12)))
    assert counts.get('mmelsa::elsa_forward', 0) == 1
    assert counts.get('mmelsa::elsa_softmax_forward', 0) == 0
    m.eval()
    counts = _op_counts(lambda: m(torch.randn(1, 6, 5, 12)))
    assert counts.get('mmelsa::elsa_softmax_forward', 0) == 1 and not _softmaxes(counts)
    m = ELSAAttention(12, 3, kernel_size=3, group_width=4, attn_drop=0.).train()
    counts = _op_counts(lambda: m(torch.randn(1, 6, 5, 12)))
    assert counts.get('mmelsa::elsa_softmax_forward', 0) == 1 and not _softmaxes(counts)


def test_fused_module_matches_float64_reference():
    """The module's output and gradients (fused path) against the same module evaluated in
    float64 through the unfold reference with an explicit softmax."""
    torch.manual_seed(0)
    m = ELSAAttention(12, 3, kernel_size=5, group_width=4, lam=1, gamma=1).eval()
    x = torch.randn(2, 7, 6, 12, requires_grad=True)
    out = m(x)
    grads = torch.autograd.grad(out.pow(2).sum(), [x] + list(m.parameters()))

    m64 = ELSAAttention(12, 3, kernel_size=5, group_width=4, lam=1, gamma=1).double().eval()
    m64.load_state_dict(m.state_dict())
    from mmelsa.models import elsa_attention as module
    real = module.ops.elsa_attention

    def reference_op(v, attn, gm, ga, kernel_size, dilation, stride, attn_is_logits):
        assert attn_is_logits
        return elsa_reference(v, attn.softmax(2), gm, ga, kernel_size, dilation, stride)

    module.ops.elsa_attention = reference_op
    try:
        x64 = x.detach().double().requires_grad_(True)
        ref = m64(x64)
        ref_grads = torch.autograd.grad(ref.pow(2).sum(), [x64] + list(m64.parameters()))
    finally:
        module.ops.elsa_attention = real
    assert max_rel_err(out, ref) < 1e-5
    for g, r in zip(grads, ref_grads):
        assert max_rel_err(g, r) < 1e-4
