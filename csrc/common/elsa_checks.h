// The argument checks of the ELSA operators, shared by the kernels of every dispatch key (the
// ops can be called directly as torch.ops.mmelsa.*, so each kernel checks what the Python
// wrapper checks too). Failures raise ValueError / TypeError in Python (TORCH_CHECK_VALUE /
// TORCH_CHECK_TYPE), naming the argument; `logits` (the fused softmax + ELSA op) names the
// attention argument "logits". Every tensor is checked to be on x's device before a kernel
// looks at any of them, which is what lets each device's kernel assume its own device.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

#include "elsa_utils.h"

namespace mmelsa {

// Checks the arguments of a forward (and of a backward but grad_out) and returns the sizes.
ElsaDims elsa_check_args(const at::Tensor& x, const at::Tensor& attn,
                         const c10::optional<at::Tensor>& ghost_mul,
                         const c10::optional<at::Tensor>& ghost_add, int64_t kernel_size,
                         int64_t dilation, int64_t stride, bool logits);

// grad_out of a backward must be (B, C, Ho, Wo) on x's device, in x's dtype.
void elsa_check_grad_out(const at::Tensor& grad_out, const at::Tensor& x, const ElsaDims& D);

}  // namespace mmelsa
