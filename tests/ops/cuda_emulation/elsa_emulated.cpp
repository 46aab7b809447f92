// The CUDA launchers and kernels of the ELSA operators compiled as host code over cuda_shim.h,
// registered as torch.ops.mmelsa_emu.* for tests/ops/cuda_emulation/emulate_cuda_kernels.py and
// tests/ops/test_cuda_emulation.py. Inputs are CPU tensors. Only ATen and torch.library are
// included (no pybind11, no torch/extension.h), which keeps the build short enough for CI.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "cuda_shim.h"

// From the csrc/ on the include path: the build's copy of a tree's csrc/, in which the places of
// the planted bugs (plants.py) are ELSA_PLANT switches that set_planted_bug turns on one at a
// time (cuda_shim.h), or that csrc/ as it is.
#define MMELSA_CUDA_EMULATION
#include "pytorch/cuda/elsa_cuda.cu"

namespace {

using mmelsa::elsa_dims;
using mmelsa::elsa_ghost_arg;
using mmelsa::elsa_map_arg;
using Grads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// The launchers called as the ops' CUDA kernels (csrc/pytorch/cuda/elsa_cuda_ops.cpp) call them
// once the arguments are checked, with the CUDA layout rule. kLogits: the fused op.
template <bool kLogits>
at::Tensor forward(const at::Tensor& x, const at::Tensor& attn,
                   const c10::optional<at::Tensor>& gm, const c10::optional<at::Tensor>& ga,
                   int64_t K, int64_t d, int64_t s) {
  const auto D = elsa_dims(x, attn, K, d, s, gm, ga);
  const bool nhwc = mmelsa::elsa_cuda_nhwc(x, D);
  return mmelsa::elsa_forward_cuda(elsa_map_arg(x, nhwc), elsa_map_arg(attn, nhwc),
                                   elsa_ghost_arg(gm), elsa_ghost_arg(ga), D, kLogits);
}

template <bool kLogits>
Grads backward(const at::Tensor& go, const at::Tensor& x, const at::Tensor& attn,
               const c10::optional<at::Tensor>& gm, const c10::optional<at::Tensor>& ga, int64_t K,
               int64_t d, int64_t s, std::array<bool, 4> mask) {
  const auto D = elsa_dims(x, attn, K, d, s, gm, ga);
  const bool nhwc = mmelsa::elsa_cuda_nhwc(x, D);
  return mmelsa::elsa_backward_cuda(elsa_map_arg(go, nhwc), elsa_map_arg(x, nhwc),
                                    elsa_map_arg(attn, nhwc), elsa_ghost_arg(gm),
                                    elsa_ghost_arg(ga), D, mask, kLogits);
}

// Whether the launchers take the tiled fast path for these inputs.
bool fast_path(const at::Tensor& x, const at::Tensor& attn, int64_t K, int64_t d, int64_t s) {
  mmelsa::cuda::tiled::Dims T;
  return mmelsa::cuda::tiled::fast_path(elsa_dims(x, attn, K, d, s), {&x, &attn}, &T);
}

// The CUDA launchers' layout rule (elsa_cuda_nhwc), for the test of its Python mirror.
bool cuda_nhwc(const at::Tensor& x, const at::Tensor& attn, int64_t K, int64_t d, int64_t s) {
  return mmelsa::elsa_cuda_nhwc(x, elsa_dims(x, attn, K, d, s));
}

int64_t launches() { return emu::launches; }

int64_t set_planted_bug(int64_t bug) {
  emu::planted_bug = static_cast<int>(bug);
  return bug;
}

}  // namespace

TORCH_LIBRARY(mmelsa_emu, m) {
  m.def("forward(Tensor x, Tensor attn, Tensor? gm, Tensor? ga, int K, int d, int s) -> Tensor",
        &forward<false>);
  m.def(
      "backward(Tensor go, Tensor x, Tensor attn, Tensor? gm, Tensor? ga, int K, int d, int s, "
      "bool[4] mask) -> (Tensor, Tensor, Tensor, Tensor)",
      &backward<false>);
  m.def(
      "softmax_forward(Tensor x, Tensor logits, Tensor? gm, Tensor? ga, int K, int d, int s) "
      "-> Tensor",
      &forward<true>);
  m.def(
      "softmax_backward(Tensor go, Tensor x, Tensor logits, Tensor? gm, Tensor? ga, int K, "
      "int d, int s, bool[4] mask) -> (Tensor, Tensor, Tensor, Tensor)",
      &backward<true>);
  m.def("fast_path(Tensor x, Tensor attn, int K, int d, int s) -> bool", &fast_path);
  m.def("cuda_nhwc(Tensor x, Tensor attn, int K, int d, int s) -> bool", &cuda_nhwc);
  m.def("launches() -> int", &launches);
  m.def("set_planted_bug(int bug) -> int", &set_planted_bug);
}
