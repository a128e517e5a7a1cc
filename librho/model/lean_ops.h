#pragma once
// Pieces of the decoder layer with a backward of their own. Three keep less between the forward and the
// backward than autograd would, with the numbers of the plain operations they replace:
//   rms_norm     keeps its input and one fp32 per row, not the fp32 normalised values as well;
//   swiglu       keeps gate and up, not silu(gate) as well;
//   SharedInput  under autocast, casts the input of several projections (q, k, v; gate, up) once, where each
//                projection would cast and keep a copy of its own.
// and `linear` makes its weight's gradient in fp32 directly.
// At the TinyLlama-1.1B shape (bf16 autocast, 8 x 2048 tokens) the layers keep 22.7 GiB for the backward instead
// of 36.1 (librho/model/memory_plan.cpp counts what is kept; ctest [memory] measures it). Each piece's values and
// gradients are bitwise those of the operations it replaces; in a whole layer, where the residual stream's
// gradient adds a norm's to the stream's own, the sum is formed in another order, so gradients agree to fp32
// rounding there (ctest [model]).
#include <ATen/core/Tensor.h>

namespace rho {

// weight * (x / rms(x)) over the last dimension, as transformers' LlamaRMSNorm computes it: normalised in fp32,
// then cast to x's dtype and scaled by the weight in that dtype.
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);

// silu(gate) * up, the SwiGLU MLP's gate.
at::Tensor swiglu(const at::Tensor& gate, const at::Tensor& up);

// x W^T (+ b) under autocast as at::linear computes it (the weight and bias cast once per autocast scope, through
// autocast's cache), with the weight's and bias's gradients formed in fp32: on CUDA the GEMM writes the fp32
// gradient itself (no bf16 rounding of it, no separate cast); elsewhere the bf16 product is cast, as autograd does.
// Without autocast, or for a weight not in fp32 (sharded layers gathered in bf16), it is at::linear.
at::Tensor linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias = {});

// a @ b with its result in `dtype`: on CUDA the GEMM writes `dtype` itself (bf16 operands, an fp32 result, no
// rounding to bf16 in between); elsewhere (no such GEMM on the CPU) the product in the operands' dtype, cast.
at::Tensor mm_as(const at::Tensor& a, const at::Tensor& b, at::ScalarType dtype);

// What several projections read. Without autocast (or outside its reach: a tensor not in fp32, a device
// autocast is off for) each view is `x` itself. Under autocast `x` is cast to autocast's dtype once; with
// gradients on, each view is that copy with a gradient edge of its own, whose gradient is cast back to x's dtype
// and summed there, as autocast's per-projection casts would be.
class SharedInput {
 public:
  explicit SharedInput(const at::Tensor& x);
  at::Tensor view() const;  // one projection's input

 private:
  at::Tensor x_, copy_;
};

}  // namespace rho
