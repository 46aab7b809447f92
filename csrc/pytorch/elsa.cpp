// The ELSA operators, plain and fused softmax + ELSA: argument checks, device dispatch and the
// registration of their CPU / CUDA / autocast kernels (the schemas are in bindings.cpp). One
// templated path serves both: kLogits selects the fused op, whose attention argument holds
// pre-softmax logits. Its kernels take the softmax over each head's K*K taps in the
// accumulation type (fp32 for half / bfloat16 / float), so the probabilities never exist as a
// tensor of the input dtype; its backward gets the logits (not the probabilities) and
// recomputes the softmax. The ops can be called directly (torch.ops.mmelsa.*), so every
// argument is checked here as well as in the Python wrapper.
#include <ATen/autocast_mode.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/library.h>

#include "elsa_utils.h"

namespace mmelsa {
namespace {

using Grads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

void check_same(const at::Tensor& t, const char* name, const at::Tensor& x) {
  TORCH_CHECK_VALUE(t.device() == x.device(), "elsa: ", name, " is on ", t.device(),
                    " but x is on ", x.device(), "; all tensors must be on one device");
  TORCH_CHECK_TYPE(t.scalar_type() == x.scalar_type(), "elsa: ", name, " has dtype ",
                   t.scalar_type(), " but x has dtype ", x.scalar_type(),
                   "; all tensors must share one dtype");
}

void check_ghost(const c10::optional<at::Tensor>& ghost, const char* name, const at::Tensor& x,
                 int64_t C, int64_t K) {
  if (!ghost.has_value() || !ghost->defined()) return;
  const at::Tensor& t = *ghost;
  TORCH_CHECK_VALUE(t.dim() == 3 && t.size(0) == C && t.size(1) == K && t.size(2) == K,
                    "elsa: ", name, " must have shape (C, K, K) = (", C, ", ", K, ", ", K,
                    "), got ", t.sizes());
  check_same(t, name, x);
}

// Checks every argument (TORCH_CHECK_VALUE / TORCH_CHECK_TYPE, so Python sees ValueError /
// TypeError naming the argument) and returns the sizes. The fused op's messages name its
// attention argument "logits".
template <bool kLogits>
ElsaDims check_args(const at::Tensor& x, const at::Tensor& attn,
                    const c10::optional<at::Tensor>& ghost_mul,
                    const c10::optional<at::Tensor>& ghost_add, int64_t kernel_size,
                    int64_t dilation, int64_t stride) {
  const char* attn_name = kLogits ? "logits" : "attn";
  TORCH_CHECK_VALUE(kernel_size >= 1 && kernel_size % 2 == 1,
                    "elsa: kernel_size must be a positive odd integer, got ", kernel_size);
  TORCH_CHECK_VALUE(dilation >= 1, "elsa: dilation must be >= 1, got ", dilation);
  TORCH_CHECK_VALUE(stride >= 1, "elsa: stride must be >= 1, got ", stride);
  // Beyond this, (K - 1) * dilation and the padded rows' widths overflow or take gigabytes.
  constexpr int64_t kMaxHyper = 65536;
  TORCH_CHECK_VALUE(kernel_size <= kMaxHyper && dilation <= kMaxHyper && stride <= kMaxHyper,
                    "elsa: kernel_size, dilation and stride must be <= ", kMaxHyper, ", got ",
                    kernel_size, ", ", dilation, ", ", stride);
  TORCH_CHECK_VALUE(x.dim() == 4, "elsa: x must be a 4-D tensor (B, C, H, W), got shape ",
                    x.sizes());
  TORCH_CHECK_TYPE(at::isFloatingType(x.scalar_type()),
                   "elsa: x must be a floating-point tensor, got dtype ", x.scalar_type());
  TORCH_CHECK_VALUE(attn.dim() == 5, "elsa: ", attn_name,
                    " must be a 5-D tensor (B, G, K*K, Ho, Wo), got shape ", attn.sizes());
  check_same(attn, attn_name, x);
  TORCH_CHECK_VALUE(attn.size(1) >= 1 && x.size(1) % attn.size(1) == 0,
                    "elsa: the channels of x (C = ", x.size(1),
                    ") must be divisible by the heads of ", attn_name, " (G = ", attn_name,
                    ".size(1) = ", attn.size(1), ")");
  const ElsaDims D = elsa_dims(x, attn, kernel_size, dilation, stride);
  TORCH_CHECK_VALUE(
      attn.size(0) == D.B && attn.size(2) == D.KK && attn.size(3) == D.Ho && attn.size(4) == D.Wo,
      "elsa: ", attn_name, " must have shape (B, G, K*K, Ho, Wo) = (", D.B, ", ", D.G, ", ", D.KK,
      ", ", D.Ho, ", ", D.Wo, ") for x of shape ", x.sizes(), ", kernel_size ", kernel_size,
      " and stride ", stride, ", got ", attn.sizes());
  check_ghost(ghost_mul, "ghost_mul", x, D.C, D.K);
  check_ghost(ghost_add, "ghost_add", x, D.C, D.K);
  return D;
}

// grad_out of a backward must be (B, C, Ho, Wo) on x's device, in x's dtype.
void check_grad_out(const at::Tensor& grad_out, const at::Tensor& x, const ElsaDims& D) {
  TORCH_CHECK_VALUE(grad_out.dim() == 4 && grad_out.size(0) == D.B && grad_out.size(1) == D.C &&
                        grad_out.size(2) == D.Ho && grad_out.size(3) == D.Wo,
                    "elsa: grad_out must have shape (B, C, Ho, Wo) = (", D.B, ", ", D.C, ", ",
                    D.Ho, ", ", D.Wo, "), got ", grad_out.sizes());
  check_same(grad_out, "grad_out", x);
}

template <bool kLogits>
at::Tensor elsa_forward(const at::Tensor& x, const at::Tensor& attn,
                        const c10::optional<at::Tensor>& ghost_mul,
                        const c10::optional<at::Tensor>& ghost_add, int64_t kernel_size,
                        int64_t dilation, int64_t stride) {
  const ElsaDims D =
      check_args<kLogits>(x, attn, ghost_mul, ghost_add, kernel_size, dilation, stride);
  const bool nhwc = elsa_use_nhwc(x, D);
  const at::Tensor gm = elsa_ghost_arg(ghost_mul), ga = elsa_ghost_arg(ghost_add);
  if (nhwc && x.is_cpu()) return elsa_forward_cpu_nhwc(x, attn, gm, ga, D, kLogits);
  // The NCHW kernels take contiguous inputs; the CUDA channels-last path reads them in place.
  const at::Tensor xc = elsa_map_arg(x, nhwc), ac = elsa_map_arg(attn, nhwc);
  if (x.is_cuda()) {
#ifdef MMELSA_WITH_CUDA
    return elsa_forward_cuda(xc, ac, gm, ga, D, kLogits);
#else
    TORCH_CHECK(false, "elsa: mmelsa._ext was built without CUDA; rebuild with FORCE_CUDA=1");
#endif
  }
  TORCH_CHECK(x.is_cpu(), "elsa: unsupported device ", x.device());
  return elsa_forward_cpu(xc, ac, gm, ga, D, kLogits);
}

// output_mask = (x, attn, ghost_mul, ghost_add); the fused op's second gradient is with respect
// to the logits.
template <bool kLogits>
Grads elsa_backward(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& attn,
                    const c10::optional<at::Tensor>& ghost_mul,
                    const c10::optional<at::Tensor>& ghost_add, int64_t kernel_size,
                    int64_t dilation, int64_t stride, std::array<bool, 4> output_mask) {
  const ElsaDims D =
      check_args<kLogits>(x, attn, ghost_mul, ghost_add, kernel_size, dilation, stride);
  check_grad_out(grad_out, x, D);
  const bool nhwc = elsa_use_nhwc(x, D);
  const at::Tensor gm = elsa_ghost_arg(ghost_mul), ga = elsa_ghost_arg(ghost_add);
  if (nhwc && x.is_cpu())
    return elsa_backward_cpu_nhwc(grad_out, x, attn, gm, ga, D, output_mask, kLogits);
  const at::Tensor go = elsa_map_arg(grad_out, nhwc), xc = elsa_map_arg(x, nhwc),
                   ac = elsa_map_arg(attn, nhwc);
  if (x.is_cuda()) {
#ifdef MMELSA_WITH_CUDA
    return elsa_backward_cuda(go, xc, ac, gm, ga, D, output_mask, kLogits);
#else
    TORCH_CHECK(false, "elsa: mmelsa._ext was built without CUDA; rebuild with FORCE_CUDA=1");
#endif
  }
  TORCH_CHECK(x.is_cpu(), "elsa: unsupported device ", x.device());
  return elsa_backward_cpu(go, xc, ac, gm, ga, D, output_mask, kLogits);
}

// Autocast kernel of a forward: casts the floating inputs of `device` to the autocast dtype in
// force (fp16 or bf16 as the user chose), never to float32. The fused op's logits too: the
// softmax runs in fp32 inside the kernel anyway, so an fp32 copy of the logits (what autocast's
// own softmax policy would make) buys no accuracy and costs 2x the traffic.
template <c10::DeviceType device, bool kLogits>
at::Tensor elsa_forward_autocast(const at::Tensor& x, const at::Tensor& attn,
                                 const c10::optional<at::Tensor>& ghost_mul,
                                 const c10::optional<at::Tensor>& ghost_add, int64_t kernel_size,
                                 int64_t dilation, int64_t stride) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(
      c10::DispatchKeySet(at::autocast::get_autocast_dispatch_key_from_device_type(device)));
  const at::ScalarType dtype = at::autocast::get_autocast_dtype(device);
  // Re-dispatch through the dispatcher (not a direct call) so that autograd still records it.
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow(kLogits ? "mmelsa::elsa_softmax_forward" : "mmelsa::elsa_forward", "")
          .typed<decltype(elsa_forward<kLogits>)>();
  return op.call(
      at::autocast::cached_cast(dtype, x, device), at::autocast::cached_cast(dtype, attn, device),
      at::autocast::cached_cast(dtype, ghost_mul, device),
      at::autocast::cached_cast(dtype, ghost_add, device), kernel_size, dilation, stride);
}

// The kernels of the four ops for one dispatch key: the same entries serve CPU and CUDA.
void impl_kernels(torch::Library& m) {
  m.impl("elsa_forward", &elsa_forward<false>);
  m.impl("elsa_backward", &elsa_backward<false>);
  m.impl("elsa_softmax_forward", &elsa_forward<true>);
  m.impl("elsa_softmax_backward", &elsa_backward<true>);
}

template <c10::DeviceType device>
void impl_autocast(torch::Library& m) {
  m.impl("elsa_forward", &elsa_forward_autocast<device, false>);
  m.impl("elsa_softmax_forward", &elsa_forward_autocast<device, true>);
}

}  // namespace
}  // namespace mmelsa

TORCH_LIBRARY_IMPL(mmelsa, CPU, m) { mmelsa::impl_kernels(m); }
TORCH_LIBRARY_IMPL(mmelsa, AutocastCPU, m) { mmelsa::impl_autocast<c10::DeviceType::CPU>(m); }
#ifdef MMELSA_WITH_CUDA
TORCH_LIBRARY_IMPL(mmelsa, CUDA, m) { mmelsa::impl_kernels(m); }
#endif
// The autocast kernel is registered for CUDA even in a CPU-only build: it only casts and
// re-dispatches, so it costs nothing and keeps the dispatch table identical.
TORCH_LIBRARY_IMPL(mmelsa, AutocastCUDA, m) { mmelsa::impl_autocast<c10::DeviceType::CUDA>(m); }
