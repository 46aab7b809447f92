"""The channels-last CPU path of the ELSA operator (csrc/pytorch/cpu/elsa_cpu_nhwc*.{h,cpp}):
an x whose channels are innermost (a channels_last tensor, or a channel slice of one, read in
place) against the float64 reference, for the plain and the fused op, every dtype, both
compiled instruction sets (AVX2 + FMA and the baseline copy), gradcheck, layouts, determinism
and the fake kernels; and the ELSA module making no per-block layout copy on the CPU."""
import pytest
import torch

from mmelsa.ops import channels_last_path, elsa_attention
from mmelsa.ops.reference import elsa_reference, max_rel_err

# (B, C, G, H, W, K, dilation, stride): C / G from 1 to 40, so that the kernels' channel blocks
# of 32 and 8 and the scalar tail are all used, with and without padding, stride, dilation.
CASES = [
    (2, 6, 3, 9, 11, 3, 1, 1),
    (1, 96, 3, 8, 9, 7, 1, 1),  # Swin-T stage 1: 32 channels per head
    (2, 80, 2, 5, 6, 5, 2, 1),  # 40 per head: a block of 32 and one of 8
    (1, 12, 3, 3, 2, 7, 1, 1),  # the map is smaller than the kernel
    (1, 21, 7, 11, 12, 9, 1, 2),  # 3 per head: the tail only
    (2, 4, 4, 6, 7, 3, 3, 3),
    (3, 16, 2, 9, 8, 3, 1, 2),  # DDF-ResNet's K = 3 with stride 2
]
# (ghost_mul, ghost_add): True shared by the batch (C, K, K), 'per-sample' one per sample
# (B, C, K, K), as DDF's channel filter. The first two serve every dtype, the rest float64.
PER_SAMPLE = 'per-sample'
GHOSTS = [(True, True), (PER_SAMPLE, PER_SAMPLE), (False, True), (True, False), (False, False),
          (PER_SAMPLE, False), (False, PER_SAMPLE), (True, PER_SAMPLE)]
# max_rel_err bounds of the non-float64 dtypes against the float64 reference (as the other
# op tests): the inputs are rounded to the dtype first, so this is the kernels' own rounding.
TOL = {torch.float64: 1e-12, torch.float32: 2e-5, torch.bfloat16: 3e-2, torch.float16: 4e-3}
ISAS = ['avx2', 'baseline']


@pytest.fixture(params=ISAS)
def isa(request, monkeypatch):
    """Runs the test with the AVX2 copy of the kernels (where the CPU has it) and with the
    baseline copy (MMELSA_CPU_NO_AVX2=1, read by the extension at every call)."""
    if request.param == 'baseline':
        monkeypatch.setenv('MMELSA_CPU_NO_AVX2', '1')
    else:
        monkeypatch.delenv('MMELSA_CPU_NO_AVX2', raising=False)
    return request.param


def channels_last_inputs(case, ghosts=(True, True), dtype=torch.float64, seed=0, extra=5,
                         device='cpu'):
    """x as a channel slice of a wider channels_last map (pixel stride C + extra, as v of the
    ELSA module), attn laid out (B, Ho, Wo, G, K*K) (as the 1x1 conv's output), ghosts (each
    False, True: shared, or PER_SAMPLE). The layouts are made on `device` (moving a slice with
    .to() would make it dense)."""
    B, C, G, H, W, K, d, s = case
    Ho, Wo = (H - 1) // s + 1, (W - 1) // s + 1
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64).to(device, dtype)

    wide = rand(B, C + extra, H, W).contiguous(memory_format=torch.channels_last)
    x = wide[:, extra:]
    attn = (rand(B, Ho, Wo, G, K * K) * 2).permute(0, 3, 4, 1, 2)
    gm, ga = (rand(*((B, C, K, K) if kind == PER_SAMPLE else (C, K, K))) if kind else None
              for kind in ghosts)
    return x, attn, gm, ga


def leaves(tensors):
    """Leaf tensors that keep the strides of the given ones (detach keeps them)."""
    return [None if t is None else t.detach().requires_grad_(True) for t in tensors]


def reference(x, attn, gm, ga, K, d, s, logits):
    return elsa_reference(x, attn.softmax(2) if logits else attn, gm, ga, K, d, s)


@pytest.mark.parametrize('logits', [False, True], ids=['plain', 'fused'])
@pytest.mark.parametrize('dtype', list(TOL), ids=lambda t: str(t).split('.')[1])
@pytest.mark.parametrize('case', CASES)
def test_matches_reference(case, dtype, logits, isa):
    """Forward and all four gradients against the float64 reference (on the same rounded
    inputs), for every dtype; the input really takes the channels-last path."""
    K, d, s = case[5:]
    for ghosts in GHOSTS if dtype == torch.float64 else GHOSTS[:2]:
        inputs = leaves(channels_last_inputs(case, ghosts, dtype))
        assert channels_last_path(inputs[0])
        out = elsa_attention(*inputs, K, d, s, attn_is_logits=logits)
        assert out.is_contiguous(memory_format=torch.channels_last)
        used = [t for t in inputs if t is not None]
        gout = torch.randn(out.shape, dtype=torch.float64).to(dtype)
        grads = torch.autograd.grad(out, used, gout)
        ref_in = [t.detach().double().requires_grad_(True) for t in used]
        it = iter(ref_in)
        rx, ra = next(it), next(it)
        rgm = next(it) if ghosts[0] else None
        rga = next(it) if ghosts[1] else None
        ref = reference(rx, ra, rgm, rga, K, d, s, logits)
        ref_grads = torch.autograd.grad(ref, ref_in, gout.double())
        assert max_rel_err(out, ref) < TOL[dtype]
        for g, r in zip(grads, ref_grads):
            assert g.dtype == dtype and g.shape == r.shape
            assert max_rel_err(g, r) < TOL[dtype]


@pytest.mark.parametrize('ghosts', [(True, True), (PER_SAMPLE, True), (False, PER_SAMPLE)],
                         ids=['shared', 'per-sample-mul', 'per-sample-add'])
@pytest.mark.parametrize('logits', [False, True], ids=['plain', 'fused'])
@pytest.mark.parametrize('case', [(1, 6, 3, 5, 4, 3, 1, 1), (2, 4, 2, 4, 5, 3, 2, 2)])
def test_gradcheck_channels_last(case, logits, ghosts, isa):
    K, d, s = case[5:]
    inputs = leaves(channels_last_inputs(case, ghosts))
    assert channels_last_path(inputs[0])

    def fn(*args):
        return elsa_attention(*args, K, d, s, attn_is_logits=logits)

    assert torch.autograd.gradcheck(fn, tuple(inputs), eps=1e-6, atol=1e-8)


@pytest.mark.parametrize('logits', [False, True], ids=['plain', 'fused'])
def test_layouts_of_outputs_and_gradients(logits):
    """out and grad_x channels_last, grad_attn laid out (B, Ho, Wo, G, K*K): the layouts the
    fake kernels promise (checked by opcheck below) and the module relies on."""
    case = (2, 8, 2, 6, 5, 3, 1, 1)
    x, a, gm, ga = leaves(channels_last_inputs(case))
    out = elsa_attention(x, a, gm, ga, 3, attn_is_logits=logits)
    assert out.is_contiguous(memory_format=torch.channels_last)
    gx, ga_ = torch.autograd.grad(out, [x, a], torch.randn_like(out))
    assert gx.is_contiguous(memory_format=torch.channels_last)
    assert ga_.permute(0, 3, 4, 1, 2).is_contiguous()


@pytest.mark.parametrize('logits', [False, True], ids=['plain', 'fused'])
def test_nchw_input_keeps_nchw_kernels(logits, monkeypatch):
    """An NCHW-contiguous x takes the NCHW kernels: NCHW output, and the instruction-set switch
    of the channels-last kernels changes no bit of it."""
    case = (2, 8, 2, 6, 5, 3, 1, 1)
    x, a, gm, ga = channels_last_inputs(case)
    x, a = x.contiguous(), a.contiguous()
    assert not channels_last_path(x)
    out = elsa_attention(x, a, gm, ga, 3, attn_is_logits=logits)
    assert out.is_contiguous()
    monkeypatch.setenv('MMELSA_CPU_NO_AVX2', '1')
    assert torch.equal(out, elsa_attention(x, a, gm, ga, 3, attn_is_logits=logits))


@pytest.mark.parametrize('ghosts', [(True, True), (PER_SAMPLE, PER_SAMPLE)],
                         ids=['shared', 'per-sample'])
@pytest.mark.parametrize('logits', [False, True], ids=['plain', 'fused'])
def test_same_result_for_any_thread_count(logits, ghosts):
    """The ghost gradients are summed over fixed row chunks, not over threads."""
    case = (2, 64, 2, 19, 7, 5, 1, 1)
    inputs = leaves(channels_last_inputs(case, ghosts, dtype=torch.float32))
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 3):
            torch.set_num_threads(n)
            out = elsa_attention(*inputs, 5, attn_is_logits=logits)
            results.append([out] + list(torch.autograd.grad(out, inputs, torch.ones_like(out))))
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*results):
        assert torch.equal(a, b)


@pytest.mark.parametrize('op', ['elsa_forward', 'elsa_softmax_forward'])
def test_opcheck_channels_last(op):
    """Fake kernels (strides included), autograd registration and schema on channels-last
    inputs."""
    x, a, gm, ga = leaves(channels_last_inputs((2, 6, 3, 7, 5, 3, 2, 2)))
    torch.library.opcheck(getattr(torch.ops.mmelsa, op).default, (x, a, gm, ga, 3, 2, 2))


@pytest.mark.parametrize('ghosts', [(True, True), (PER_SAMPLE, True)],
                         ids=['shared', 'per-sample'])
@pytest.mark.parametrize('op', ['elsa_backward', 'elsa_softmax_backward'])
def test_opcheck_backward_channels_last(op, ghosts):
    x, a, gm, ga = channels_last_inputs((2, 6, 3, 7, 5, 3, 1, 2), ghosts)
    grad = torch.randn(2, 4, 3, 6, dtype=torch.float64).permute(0, 3, 1, 2)
    torch.library.opcheck(getattr(torch.ops.mmelsa, op).default,
                          (grad, x, a, gm, ga, 3, 1, 2, [True, True, True, True]))


def test_channels_last_path_rule():
    x = torch.randn(2, 6, 4, 5)
    assert not channels_last_path(x)  # NCHW-contiguous
    assert channels_last_path(x.contiguous(memory_format=torch.channels_last))
    assert channels_last_path(x.contiguous(memory_format=torch.channels_last)[:, 1:])
    assert not channels_last_path(x[:, :, :, 1:])  # strided, channels not innermost
    assert not channels_last_path(torch.randn(2, 1, 4, 5).contiguous(
        memory_format=torch.channels_last))  # C == 1: both layouts are the same
