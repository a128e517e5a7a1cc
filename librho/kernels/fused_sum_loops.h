#pragma once
// Internal to fused_sum (librho/kernels/fused_sum.h): its TensorIterator and the element-wise sum that the CPU loop
// and the CUDA kernel share.
#include <ATen/TensorIterator.h>
#include <c10/macros/Macros.h>

#include <vector>

namespace rho {
namespace kernels {

// out (fp32) = ((p0 + p1) + p2) + p3 element by element: inputs as they are (no promotion), out given.
at::TensorIterator fused_sum_iterator(const at::Tensor& out, const std::vector<at::Tensor>& parts);

// The sum in fp32, in the parts' order (fp32 additions are exactly rounded; there is nothing to fuse them with).
template <typename T, typename... Rest>
C10_HOST_DEVICE inline float fused_sum_of(T first, Rest... rest) {
  float sum = static_cast<float>(first);
  ((sum = sum + static_cast<float>(rest)), ...);
  return sum;
}

}  // namespace kernels
}  // namespace rho
