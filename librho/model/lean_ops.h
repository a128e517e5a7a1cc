#pragma once
// Pieces of the decoder layer with a backward of their own. Three keep less between the forward and the
// backward than autograd would, with the numbers of the plain operations they replace:
//   rms_norm     keeps its input and one fp32 per row, not the fp32 normalised values as well;
//   swiglu       keeps gate and up, not silu(gate) as well;
//   SharedInput  under autocast, casts the input of several projections (q, k, v; gate, up) once, where each
//                projection would cast and keep a copy of its own, and sums their gradients in one node.
// and `linear` makes its weight's gradient in fp32 directly.
// At the TinyLlama-1.1B shape (bf16 autocast, 8 x 2048 tokens) the layers keep 22.7 GiB for the backward instead
// of 36.1 (librho/model/memory_plan.cpp counts what is kept; ctest [memory] measures it). Each piece's values and
// gradients are bitwise those of the operations it replaces; in a whole layer, where the residual stream's
// gradient adds a norm's to the stream's own, the sum is formed in another order, so gradients agree to fp32
// rounding there (ctest [model]).
#include <ATen/core/Tensor.h>

#include <vector>

namespace rho {

// weight * (x / rms(x)) over the last dimension, as transformers' LlamaRMSNorm computes it: normalised in fp32,
// then cast to x's dtype and scaled by the weight in that dtype.
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);

// silu(gate) * up, the SwiGLU MLP's gate. On CUDA its forward and its backward are one kernel each
// (librho/kernels/swiglu.h: ATen's arithmetic step by step).
at::Tensor swiglu(const at::Tensor& gate, const at::Tensor& up);

// x W^T (+ b) under autocast as at::linear computes it (the weight and bias cast once per autocast scope, through
// autocast's cache), with the weight's and bias's gradients formed in fp32: on CUDA the GEMM writes the fp32
// gradient itself (no bf16 rounding of it, no separate cast); elsewhere the bf16 product is cast, as autograd does.
// Without autocast, or for a weight not in fp32 (sharded layers gathered in bf16), it is at::linear.
at::Tensor linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias = {});

// a @ b with its result in `dtype`: on CUDA the GEMM writes `dtype` itself (bf16 operands, an fp32 result, no
// rounding to bf16 in between); elsewhere (no such GEMM on the CPU) the product in the operands' dtype, cast.
at::Tensor mm_as(const at::Tensor& a, const at::Tensor& b, at::ScalarType dtype);

// What `n` projections read. Without autocast (or outside its reach: a tensor not in fp32, a device autocast is
// off for) each view is `x` itself. Under autocast `x` is cast to autocast's dtype once; with gradients on, the
// views are that copy, each with a gradient edge of its own, and x's gradient is the sum of theirs in x's dtype,
// formed by one node (sum_as, views in order) rather than by a cast per projection and autograd's accumulation:
// the same values as autocast's per-projection casts, summed in a fixed order where autograd sums in the order the
// gradients arrive (bf16 gradients summed in fp32 are exact unless their exponents lie far apart, so the two
// mostly agree bit for bit, and otherwise to fp32 rounding).
class SharedInput {
 public:
  SharedInput(const at::Tensor& x, int64_t n);
  const at::Tensor& view(int64_t i) const;  // projection i's input, 0 <= i < n

 private:
  std::vector<at::Tensor> views_;
};

// The sum of the defined tensors of `parts` (same shape) in `dtype`, formed in their order: ((p0 + p1) + p2) ...,
// each converted to `dtype` before it is added (exactly, for a wider dtype). Undefined when none is defined. On
// CUDA, for 2 or 3 parts of one dense layout summed in fp32, one kernel (rho::fused_sum, librho/kernels/fused_sum.h: the same values).
at::Tensor sum_as(const std::vector<at::Tensor>& parts, at::ScalarType dtype);

}  // namespace rho
