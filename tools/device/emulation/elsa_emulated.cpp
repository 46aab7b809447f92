// The CUDA launchers and kernels of the ELSA operator compiled as host code over cuda_shim.h,
// exposed to Python for tools/device/emulate_cuda_kernels.py. Inputs are CPU tensors.
#include <torch/extension.h>

#include "cuda_shim.h"

#define MMELSA_CUDA_EMULATION
#include "../../../csrc/pytorch/cuda/elsa_cuda.cu"

namespace {

mmelsa::ElsaDims dims(const at::Tensor& x, const at::Tensor& attn, int64_t K, int64_t d,
                      int64_t s) {
  mmelsa::ElsaDims D;
  D.B = x.size(0);
  D.C = x.size(1);
  D.H = x.size(2);
  D.W = x.size(3);
  D.G = attn.size(1);
  D.K = K;
  D.KK = K * K;
  D.dil = d;
  D.stride = s;
  D.pad = (K / 2) * d;
  D.Ho = mmelsa::elsa_out_size(D.H, s);
  D.Wo = mmelsa::elsa_out_size(D.W, s);
  D.cpg = D.C / D.G;
  return D;
}

at::Tensor or_undef(const c10::optional<at::Tensor>& t) {
  return t ? t->contiguous() : at::Tensor();
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", [](at::Tensor x, at::Tensor attn, c10::optional<at::Tensor> gm,
                      c10::optional<at::Tensor> ga, int64_t K, int64_t d, int64_t s) {
    return mmelsa::elsa_forward_cuda(x.contiguous(), attn.contiguous(), or_undef(gm), or_undef(ga),
                                     dims(x, attn, K, d, s));
  });
  m.def("backward",
        [](at::Tensor go, at::Tensor x, at::Tensor attn, c10::optional<at::Tensor> gm,
           c10::optional<at::Tensor> ga, int64_t K, int64_t d, int64_t s, std::vector<bool> mask) {
          return mmelsa::elsa_backward_cuda(go.contiguous(), x.contiguous(), attn.contiguous(),
                                            or_undef(gm), or_undef(ga), dims(x, attn, K, d, s),
                                            {mask[0], mask[1], mask[2], mask[3]});
        });
  m.def("launches", [] { return emu::launches; });
}
