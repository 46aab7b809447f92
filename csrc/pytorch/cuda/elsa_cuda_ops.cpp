// The CUDA kernels of the four ELSA ops (schemas in bindings.cpp), compiled in a CUDA build
// only: the argument checks, then the launchers (elsa_cuda.cu). On the channels-last path
// (elsa_cuda_nhwc: the tiled kernels' configuration) the maps are passed as they are, read in
// place; otherwise as NCHW-contiguous copies. kLogits: the fused softmax + ELSA op. Host code
// only, so it is compiled by the C++ compiler, not nvcc.
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
  const bool nhwc = elsa_cuda_nhwc(x, D);
  return elsa_forward_cuda(elsa_map_arg(x, nhwc), elsa_map_arg(attn, nhwc),
                           elsa_ghost_arg(ghost_mul), elsa_ghost_arg(ghost_add), D, kLogits);
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
  const bool nhwc = elsa_cuda_nhwc(x, D);
  return elsa_backward_cuda(elsa_map_arg(grad_out, nhwc), elsa_map_arg(x, nhwc),
                            elsa_map_arg(attn, nhwc), elsa_ghost_arg(ghost_mul),
                            elsa_ghost_arg(ghost_add), D, output_mask, kLogits);
}

}  // namespace
}  // namespace mmelsa

TORCH_LIBRARY_IMPL(mmelsa, CUDA, m) {
  m.impl("elsa_forward", &mmelsa::forward<false>);
  m.impl("elsa_backward", &mmelsa::backward<false>);
  m.impl("elsa_softmax_forward", &mmelsa::forward<true>);
  m.impl("elsa_softmax_backward", &mmelsa::backward<true>);
}
