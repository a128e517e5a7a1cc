#pragma once
// Internal to swiglu (librho/kernels/swiglu.h): the element-wise arithmetic the CPU loops and the CUDA kernels share,
// written as ATen's silu kernels write it (aten/src/ATen/native/cuda/ActivationSiluKernel.cu), each intermediate
// that the operations would store rounded to T.
#include <ATen/OpMathType.h>
#include <c10/macros/Macros.h>

#include <cmath>
#include <type_traits>

namespace rho {
namespace kernels {
namespace {  // internal linkage: see rotary_pair.h

template <typename F>
C10_HOST_DEVICE inline F swiglu_exp(F x) {
#ifdef __CUDA_ARCH__
  if constexpr (std::is_same_v<F, float>) return ::expf(x);  // c10::cuda::compat::exp, as ATen's kernel calls it
  else return ::exp(x);
#else
  return std::exp(x);
#endif
}

// at::silu(x): x / (1 + exp(-x)) in opmath, rounded to T.
template <typename T>
C10_HOST_DEVICE inline T swiglu_silu(T x) {
  using F = at::opmath_type<T>;
  const F x_acc = static_cast<F>(x);
  return static_cast<T>(x_acc / (F(1) + swiglu_exp(-x_acc)));
}

// a * b as ATen's product of two T computes it.
template <typename T>
C10_HOST_DEVICE inline T swiglu_mul(T a, T b) {
  using F = at::opmath_type<T>;
  return static_cast<T>(static_cast<F>(a) * static_cast<F>(b));
}

// at::silu_backward(dy, x).
template <typename T>
C10_HOST_DEVICE inline T swiglu_silu_backward(T dy, T x) {
  using F = at::opmath_type<T>;
  const F dy_acc = static_cast<F>(dy);
  const F x_acc = static_cast<F>(x);
  const F s_acc = F(1) / (F(1) + swiglu_exp(-x_acc));
  return static_cast<T>(dy_acc * s_acc * (F(1) + x_acc * (F(1) - s_acc)));
}

// Element i of the forward: at::silu(gate) * up.
template <typename T>
C10_HOST_DEVICE inline T swiglu_value(T gate, T up) {
  return swiglu_mul(swiglu_silu(gate), up);
}

// Element i of the backward: at::silu_backward(g * up, gate) and g * at::silu(gate).
template <typename T>
C10_HOST_DEVICE inline void swiglu_gradient(T g, T gate, T up, T& grad_gate, T& grad_up) {
  grad_gate = swiglu_silu_backward(swiglu_mul(g, up), gate);
  grad_up = swiglu_mul(g, swiglu_silu(gate));
}

}  // namespace
}  // namespace kernels
}  // namespace rho
