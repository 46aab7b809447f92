// The operator schemas (torch.library, namespace "mmelsa") and a small pybind11 module that
// says how the extension was built. Their kernels are registered one file per dispatch key:
// CPU in cpu/elsa_cpu_ops.cpp, CUDA in cuda/elsa_cuda_ops.cpp (CUDA builds only), autocast in
// elsa_autocast.cpp; autograd and the fake (meta) kernels from Python, in mmelsa/ops/.
#include <ATen/Parallel.h>
#include <torch/extension.h>
#include <torch/library.h>

#include <mutex>
#include <set>
#include <string>
#include <thread>

#ifdef MMELSA_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

TORCH_LIBRARY(mmelsa, m) {
  m.def(
      "elsa_forward(Tensor x, Tensor attn, Tensor? ghost_mul, Tensor? ghost_add, "
      "int kernel_size, int dilation, int stride) -> Tensor");
  // output_mask = (x, attn, ghost_mul, ghost_add): gradients not asked for come back as (0,)
  // tensors (also for an absent ghost).
  m.def(
      "elsa_backward(Tensor grad_out, Tensor x, Tensor attn, Tensor? ghost_mul, "
      "Tensor? ghost_add, int kernel_size, int dilation, int stride, bool[4] output_mask) "
      "-> (Tensor, Tensor, Tensor, Tensor)");
  // Fused softmax + ELSA: `logits` are pre-softmax attention scores, softmaxed over each head's
  // K*K taps inside the kernels. The backward returns (grad_x, grad_logits, grad_ghost_mul,
  // grad_ghost_add) with the same output_mask convention.
  m.def(
      "elsa_softmax_forward(Tensor x, Tensor logits, Tensor? ghost_mul, Tensor? ghost_add, "
      "int kernel_size, int dilation, int stride) -> Tensor");
  m.def(
      "elsa_softmax_backward(Tensor grad_out, Tensor x, Tensor logits, Tensor? ghost_mul, "
      "Tensor? ghost_add, int kernel_size, int dilation, int stride, bool[4] output_mask) "
      "-> (Tensor, Tensor, Tensor, Tensor)");
}

namespace {

bool with_cuda() {
#ifdef MMELSA_WITH_CUDA
  return true;
#else
  return false;
#endif
}

std::string cuda_version() {
#if defined(MMELSA_WITH_CUDA) && defined(CUDART_VERSION)
  return std::to_string(CUDART_VERSION / 1000) + "." +
         std::to_string((CUDART_VERSION % 1000) / 10);
#else
  return "";
#endif
}

// How many threads at::parallel_for uses in this extension for `n` items of grain 1. It is
// compiled here, like the kernels' loops (torch's headers inline it): 1 means the extension was
// built without OpenMP and its CPU kernels run serially whatever torch.set_num_threads says.
int64_t parallel_for_threads(int64_t n) {
  std::mutex lock;
  std::set<std::thread::id> seen;
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    std::lock_guard<std::mutex> guard(lock);
    seen.insert(std::this_thread::get_id());
  });
  return static_cast<int64_t>(seen.size());
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "mmelsa native kernels (the ELSA operator is registered as torch.ops.mmelsa.*)";
  m.def("with_cuda", &with_cuda, "True when the CUDA kernels were compiled in");
  m.def("cuda_version", &cuda_version, "CUDA runtime version built against, '' when none");
  m.def("parallel_for_threads", &parallel_for_threads,
        "threads at::parallel_for uses in the extension for n items (1: built without OpenMP)");
}
