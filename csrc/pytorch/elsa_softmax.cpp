// Fused softmax + ELSA operator: argument checks and device dispatch, one entry per direction.
// The attention argument holds pre-softmax logits; the kernels take the softmax over each
// head's K*K taps in the accumulation type (fp32 for half / bfloat16 / float), so the
// probabilities never exist as a tensor of the input dtype. The backward gets the logits (not
// the probabilities) and recomputes the softmax. Registered in bindings.cpp.
#include <ATen/autocast_mode.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/impl/LocalDispatchKeySet.h>

#include "elsa_utils.h"

namespace mmelsa {
namespace {

at::Tensor contiguous_or_undefined(const c10::optional<at::Tensor>& t) {
  return (t.has_value() && t->defined()) ? t->contiguous() : at::Tensor();
}

}  // namespace

at::Tensor elsa_softmax_forward(const at::Tensor& x, const at::Tensor& logits,
                                const c10::optional<at::Tensor>& ghost_mul,
                                const c10::optional<at::Tensor>& ghost_add, int64_t kernel_size,
                                int64_t dilation, int64_t stride) {
  const ElsaDims D =
      elsa_check_args(x, logits, ghost_mul, ghost_add, kernel_size, dilation, stride, "logits");
  const bool nhwc = elsa_use_nhwc(x, D);
  const at::Tensor gm = contiguous_or_undefined(ghost_mul),
                   ga = contiguous_or_undefined(ghost_add);
  if (nhwc && x.is_cpu()) return elsa_forward_cpu_nhwc(x, logits, gm, ga, D, true);
  // The NCHW kernels take contiguous inputs; the CUDA channels-last path reads them in place.
  const at::Tensor xc = nhwc ? x : x.contiguous(), lc = nhwc ? logits : logits.contiguous();
  if (x.is_cuda()) {
#ifdef MMELSA_WITH_CUDA
    return elsa_softmax_forward_cuda(xc, lc, gm, ga, D);
#else
    TORCH_CHECK(false, "elsa: mmelsa._ext was built without CUDA; rebuild with FORCE_CUDA=1");
#endif
  }
  TORCH_CHECK(x.is_cpu(), "elsa: unsupported device ", x.device());
  return elsa_softmax_forward_cpu(xc, lc, gm, ga, D);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> elsa_softmax_backward(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& logits,
    const c10::optional<at::Tensor>& ghost_mul, const c10::optional<at::Tensor>& ghost_add,
    int64_t kernel_size, int64_t dilation, int64_t stride, std::array<bool, 4> output_mask) {
  const ElsaDims D =
      elsa_check_args(x, logits, ghost_mul, ghost_add, kernel_size, dilation, stride, "logits");
  elsa_check_grad_out(grad_out, x, D);
  const bool nhwc = elsa_use_nhwc(x, D);
  const at::Tensor gm = contiguous_or_undefined(ghost_mul),
                   ga = contiguous_or_undefined(ghost_add);
  if (nhwc && x.is_cpu())
    return elsa_backward_cpu_nhwc(grad_out, x, logits, gm, ga, D, output_mask, true);
  const at::Tensor go = nhwc ? grad_out : grad_out.contiguous(), xc = nhwc ? x : x.contiguous(),
                   lc = nhwc ? logits : logits.contiguous();
  if (x.is_cuda()) {
#ifdef MMELSA_WITH_CUDA
    return elsa_softmax_backward_cuda(go, xc, lc, gm, ga, D, output_mask);
#else
    TORCH_CHECK(false, "elsa: mmelsa._ext was built without CUDA; rebuild with FORCE_CUDA=1");
#endif
  }
  TORCH_CHECK(x.is_cpu(), "elsa: unsupported device ", x.device());
  return elsa_softmax_backward_cpu(go, xc, lc, gm, ga, D, output_mask);
}

// Autocast: the logits are cast to the autocast dtype like every other input, never up to
// float32: the softmax runs in fp32 inside the kernel anyway, so an fp32 copy of the logits
// (what autocast's own softmax policy would make) buys no accuracy and costs 2x the traffic.
template <c10::DeviceType device>
at::Tensor elsa_softmax_forward_autocast(const at::Tensor& x, const at::Tensor& logits,
                                         const c10::optional<at::Tensor>& ghost_mul,
                                         const c10::optional<at::Tensor>& ghost_add,
                                         int64_t kernel_size, int64_t dilation, int64_t stride) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(
      c10::DispatchKeySet(at::autocast::get_autocast_dispatch_key_from_device_type(device)));
  const at::ScalarType dtype = at::autocast::get_autocast_dtype(device);
  // Re-dispatch through the dispatcher (not a direct call) so that autograd still records it.
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("mmelsa::elsa_softmax_forward", "")
                       .typed<decltype(elsa_softmax_forward)>();
  return op.call(at::autocast::cached_cast(dtype, x, device),
                 at::autocast::cached_cast(dtype, logits, device),
                 at::autocast::cached_cast(dtype, ghost_mul, device),
                 at::autocast::cached_cast(dtype, ghost_add, device), kernel_size, dilation,
                 stride);
}

template at::Tensor elsa_softmax_forward_autocast<c10::DeviceType::CPU>(
    const at::Tensor&, const at::Tensor&, const c10::optional<at::Tensor>&,
    const c10::optional<at::Tensor>&, int64_t, int64_t, int64_t);
template at::Tensor elsa_softmax_forward_autocast<c10::DeviceType::CUDA>(
    const at::Tensor&, const at::Tensor&, const c10::optional<at::Tensor>&,
    const c10::optional<at::Tensor>&, int64_t, int64_t, int64_t);

}  // namespace mmelsa
