#pragma once
// Internal to librho's element-wise kernels (rotary, fused_sum, swiglu): what each one's "supports" asks of an
// operand and of a device.
#include <ATen/core/Tensor.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <vector>

namespace rho {
namespace kernels {

// Plain strided memory, read as it is stored: defined, no lazy negation or conjugation, not a zero tensor.
inline bool plain_operand(const at::Tensor& t) {
  return t.defined() && t.layout() == at::kStrided && !t.is_neg() && !t.is_conj() && !t._is_zerotensor();
}

// Whether autograd records operations on these tensors now (grad mode on and one of them requires a gradient: a
// backward under create_graph, say). Callers then run the ATen operations a kernel stands for, so that autograd
// sees them; the kernels make no autograd node.
inline bool autograd_records(const std::vector<at::Tensor>& tensors) {
  const auto tracked = [](const at::Tensor& t) { return t.defined() && t.requires_grad(); };
  return at::GradMode::is_enabled() && std::any_of(tensors.begin(), tensors.end(), tracked);
}

// The CPU, or CUDA where librho was built with its CUDA kernels.
inline bool kernels_run_on(const at::Device& device) {
#ifdef RHO_WITH_CUDA
  return device.is_cpu() || device.is_cuda();
#else
  return device.is_cpu();
#endif
}

}  // namespace kernels
}  // namespace rho
