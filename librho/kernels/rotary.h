#pragma once
// rotary: the rotary position embedding of Hugging Face Llama checkpoints ("rotate half" layout) as one
// element-wise pass, on the CPU and on CUDA. With x's last dimension in halves x1, x2 it computes
//   transpose = false:  x * cos + cat(x2, x1) * sin_signed          (apply_rotary's values)
//   transpose = true:   x * cos + cat(t2, t1),  t = x * sin_signed    (their gradient, for x the output's gradient)
// each product and the sum rounded to x's dtype as ATen's element-wise kernels round them (in fp32 for bf16 and
// fp16, no fused multiply-add), so the result equals those operations bit for bit, reading x once and writing once
// where they take four kernels (a concatenation, two products and a sum). The model uses it on CUDA (apply_rotary,
// librho/model/llama.h); the CPU loop is the CUDA kernel's twin, the same arithmetic (rotary_pair.h) tested where no
// GPU is, and slower than ATen's vectorised operations in bf16.
#include <ATen/core/Tensor.h>

namespace rho {

// Whether rotary() takes these operands: x of 1 to 7 dimensions, its last even and non-zero, in fp32, fp64, bf16 or
// fp16; cos and sin_signed of x's dtype and device and broadcastable to x, their last dimension x's; all three
// dense strided tensors (no lazy negation or conjugation); on CUDA only where librho was built with its CUDA
// kernels. It makes no autograd node: callers that need gradients wrap it (apply_rotary does).
bool rotary_supports(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin_signed);

// A new tensor of x's shape, dtype and layout. Throws where rotary_supports is false.
at::Tensor rotary(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin_signed, bool transpose);

}  // namespace rho
