// The autocast kernels of the ELSA forwards (the backwards run in the dtype their forward ran
// in). Device-independent: each casts and re-dispatches to the device's kernel, so both
// autocast keys are registered in every build, CPU-only included; it costs nothing and keeps
// the dispatch table the same.
//
// The floating inputs are cast to the autocast dtype in force (fp16 or bf16, as the user chose),
// never to float32. The fused op's logits too: its softmax runs in fp32 inside the kernel
// anyway, so an fp32 copy of the logits (what autocast's own softmax policy would make) buys no
// accuracy and costs twice the traffic.
#include <ATen/autocast_mode.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/library.h>

namespace mmelsa {
namespace {

using Forward = at::Tensor(const at::Tensor&, const at::Tensor&, const c10::optional<at::Tensor>&,
                           const c10::optional<at::Tensor>&, int64_t, int64_t, int64_t);

// kLogits: the fused softmax + ELSA op.
template <c10::DeviceType device, bool kLogits>
at::Tensor forward_autocast(const at::Tensor& x, const at::Tensor& attn,
                            const c10::optional<at::Tensor>& ghost_mul,
                            const c10::optional<at::Tensor>& ghost_add, int64_t kernel_size,
                            int64_t dilation, int64_t stride) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(
      c10::DispatchKeySet(at::autocast::get_autocast_dispatch_key_from_device_type(device)));
  const at::ScalarType dtype = at::autocast::get_autocast_dtype(device);
  // Through the dispatcher (not a direct call) so that autograd still records it.
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow(kLogits ? "mmelsa::elsa_softmax_forward" : "mmelsa::elsa_forward", "")
          .typed<Forward>();
  return op.call(
      at::autocast::cached_cast(dtype, x, device), at::autocast::cached_cast(dtype, attn, device),
      at::autocast::cached_cast(dtype, ghost_mul, device),
      at::autocast::cached_cast(dtype, ghost_add, device), kernel_size, dilation, stride);
}

template <c10::DeviceType device>
void impl_autocast(torch::Library& m) {
  m.impl("elsa_forward", &forward_autocast<device, false>);
  m.impl("elsa_softmax_forward", &forward_autocast<device, true>);
}

}  // namespace
}  // namespace mmelsa

TORCH_LIBRARY_IMPL(mmelsa, AutocastCPU, m) { mmelsa::impl_autocast<c10::DeviceType::CPU>(m); }
TORCH_LIBRARY_IMPL(mmelsa, AutocastCUDA, m) { mmelsa::impl_autocast<c10::DeviceType::CUDA>(m); }
