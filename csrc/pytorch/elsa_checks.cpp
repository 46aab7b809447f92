// The argument checks of the ELSA operators (elsa_checks.h). The messages are part of the
// interface: tests/ops/test_elsa_errors.py matches them.
#include "elsa_checks.h"

namespace mmelsa {
namespace {

void check_same(const at::Tensor& t, const char* name, const at::Tensor& x) {
  TORCH_CHECK_VALUE(t.device() == x.device(), "elsa: ", name, " is on ", t.device(),
                    " but x is on ", x.device(), "; all tensors must be on one device");
  TORCH_CHECK_TYPE(t.scalar_type() == x.scalar_type(), "elsa: ", name, " has dtype ",
                   t.scalar_type(), " but x has dtype ", x.scalar_type(),
                   "; all tensors must share one dtype");
}

// A ghost is shared by the batch, (C, K, K), or one per sample, (B, C, K, K).
void check_ghost(const c10::optional<at::Tensor>& ghost, const char* name, const at::Tensor& x,
                 const ElsaDims& D) {
  if (!ghost.has_value() || !ghost->defined()) return;
  const at::Tensor& t = *ghost;
  const int64_t C = D.C, K = D.K;
  const bool shared = t.dim() == 3 && t.size(0) == C && t.size(1) == K && t.size(2) == K;
  const bool per_sample =
      t.dim() == 4 && t.size(0) == D.B && t.size(1) == C && t.size(2) == K && t.size(3) == K;
  TORCH_CHECK_VALUE(shared || per_sample, "elsa: ", name, " must have shape (C, K, K) = (", C,
                    ", ", K, ", ", K, ") or (B, C, K, K) = (", D.B, ", ", C, ", ", K, ", ", K,
                    "), got ", t.sizes());
  check_same(t, name, x);
}

}  // namespace

ElsaDims elsa_check_args(const at::Tensor& x, const at::Tensor& attn,
                         const c10::optional<at::Tensor>& ghost_mul,
                         const c10::optional<at::Tensor>& ghost_add, int64_t kernel_size,
                         int64_t dilation, int64_t stride, bool logits) {
  const char* attn_name = logits ? "logits" : "attn";
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
  const ElsaDims D = elsa_dims(x, attn, kernel_size, dilation, stride, ghost_mul, ghost_add);
  TORCH_CHECK_VALUE(
      attn.size(0) == D.B && attn.size(2) == D.KK && attn.size(3) == D.Ho && attn.size(4) == D.Wo,
      "elsa: ", attn_name, " must have shape (B, G, K*K, Ho, Wo) = (", D.B, ", ", D.G, ", ", D.KK,
      ", ", D.Ho, ", ", D.Wo, ") for x of shape ", x.sizes(), ", kernel_size ", kernel_size,
      " and stride ", stride, ", got ", attn.sizes());
  check_ghost(ghost_mul, "ghost_mul", x, D);
  check_ghost(ghost_add, "ghost_add", x, D);
  return D;
}

void elsa_check_grad_out(const at::Tensor& grad_out, const at::Tensor& x, const ElsaDims& D) {
  TORCH_CHECK_VALUE(grad_out.dim() == 4 && grad_out.size(0) == D.B && grad_out.size(1) == D.C &&
                        grad_out.size(2) == D.Ho && grad_out.size(3) == D.Wo,
                    "elsa: grad_out must have shape (B, C, Ho, Wo) = (", D.B, ", ", D.C, ", ",
                    D.Ho, ", ", D.Wo, "), got ", grad_out.sizes());
  check_same(grad_out, "grad_out", x);
}

}  // namespace mmelsa
