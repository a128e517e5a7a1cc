#pragma once
// swiglu_values / swiglu_gradients: SwiGLU, silu(gate) * up, and its two gradients, each as one element-wise pass
// over operands of one dense layout, where the operations take two (forward: silu, product) and four (backward:
// two products, silu, silu's backward) passes. The arithmetic is ATen's, step by
// step: silu(x) = x / (1 + exp(-x)) and its backward dy * s * (1 + x * (1 - s)), s = 1 / (1 + exp(-x)), in
// at::opmath_type, each intermediate the operations would store rounded to the operands' dtype. On CUDA nvcc
// compiles the same expressions as in ATen's kernels, which gives their values bit for bit where it generates the
// same code for them (exp and the add after it may be fused or not): ctest [cuda] checks that over every bf16 and
// fp16 gate and a million fp32 ones. On the CPU ATen's vectorised exp differs from the C library's in the last bit
// now and then, so the CPU loop, the CUDA kernel's tested twin, agrees with the operations to a few units in the
// last place.
#include <ATen/core/Tensor.h>

#include <utility>

namespace rho {

// Whether the passes take gate and up (and g): dense, of one shape and strides, one dtype (fp32, bf16, fp16) and
// one device (the CPU, or CUDA where librho was built with its CUDA kernels). They make no autograd node.
bool swiglu_supports(const at::Tensor& gate, const at::Tensor& up, const at::Tensor& g = {});

// silu(gate) * up, as at::silu(gate) * up computes it.
at::Tensor swiglu_values(const at::Tensor& gate, const at::Tensor& up);

// {d/dgate, d/dup} of sum(g * silu(gate) * up): at::silu_backward(g * up, gate) and g * at::silu(gate).
std::pair<at::Tensor, at::Tensor> swiglu_gradients(const at::Tensor& g, const at::Tensor& gate, const at::Tensor& up);

}  // namespace rho
