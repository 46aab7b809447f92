// The CPU kernels of the four ELSA ops (schemas in bindings.cpp): the argument checks, then the
// channels-last kernels (elsa_cpu_nhwc.cpp) when x has its channels innermost, the NCHW ones
// (elsa_cpu.cpp) on contiguous copies otherwise. kLogits: the fused softmax + ELSA op.
#include <torch/library.h>

#include "elsa_checks.h"
#include "elsa_utils.h"

namespace mmelsa {
namespace {

using Grads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

template <bool kLogits>
at::Tensor forward(const at::Tensor& x, const at::Tensor& attn,
                   const c10::optional<at::Tensor>& ghost_mul,
                   const c10::optional<at::Tensor>& ghost_add, int64_t kernel_size,
                   int64_t dilation, int64_t stride) {
  const ElsaDims D =
      elsa_check_args(x, attn, ghost_mul, ghost_add, kernel_size, dilation, stride, kLogits);
  const at::Tensor gm = elsa_ghost_arg(ghost_mul), ga = elsa_ghost_arg(ghost_add);
  if (elsa_cpu_nhwc(x)) return elsa_forward_cpu_nhwc(x, attn, gm, ga, D, kLogits);
  return elsa_forward_cpu(x.contiguous(), attn.contiguous(), gm, ga, D, kLogits);
}

// output_mask = (x, attn, ghost_mul, ghost_add); the fused op's second gradient is with respect
// to the logits.
template <bool kLogits>
Grads backward(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& attn,
               const c10::optional<at::Tensor>& ghost_mul,
               const c10::optional<at::Tensor>& ghost_add, int64_t kernel_size, int64_t dilation,
               int64_t stride, std::array<bool, 4> output_mask) {
  const ElsaDims D =
      elsa_check_args(x, attn, ghost_mul, ghost_add, kernel_size, dilation, stride, kLogits);
  elsa_check_grad_out(grad_out, x, D);
  const at::Tensor gm = elsa_ghost_arg(ghost_mul), ga = elsa_ghost_arg(ghost_add);
  if (elsa_cpu_nhwc(x))
    return elsa_backward_cpu_nhwc(grad_out, x, attn, gm, ga, D, output_mask, kLogits);
  return elsa_backward_cpu(grad_out.contiguous(), x.contiguous(), attn.contiguous(), gm, ga, D,
                           output_mask, kLogits);
}

}  // namespace
}  // namespace mmelsa

TORCH_LIBRARY_IMPL(mmelsa, CPU, m) {
  m.impl("elsa_forward", &mmelsa::forward<false>);
  m.impl("elsa_backward", &mmelsa::backward<false>);
  m.impl("elsa_softmax_forward", &mmelsa::forward<true>);
  m.impl("elsa_softmax_backward", &mmelsa::backward<true>);
}
