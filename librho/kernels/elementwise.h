#pragma once
// Internal to librho's element-wise kernels over dense tensors (fused_sum, swiglu): operands that share one dense
// layout are walked as flat arrays, element i of each at the same place, by a CPU loop and a CUDA grid-stride loop
// that call the same arithmetic.
#include <ATen/core/Tensor.h>

#include <vector>

namespace rho {
namespace kernels {

// Dense (no gaps, no overlap) and all with the first one's sizes and strides: then each is a flat array of
// numel() elements from data_ptr(), in the same order, and an output made by at::empty_like(first) is one too.
inline bool same_dense_layout(const std::vector<const at::Tensor*>& tensors) {
  const auto& first = *tensors.front();
  if (!first.is_non_overlapping_and_dense()) return false;
  for (const auto* t : tensors)
    if (t->sizes() != first.sizes() || t->strides() != first.strides()) return false;
  return true;
}

}  // namespace kernels
}  // namespace rho
