#pragma once
// topk_mask: the k highest scores as a boolean mask, registered as the torch operator rho::topk_mask with a
// CPU kernel and a CUDA radix-select kernel (no sort, no torch.topk).
//   - exactly min(k, number of non-NaN scores) elements are selected;
//   - ties at the threshold go to the lower flat index first (deterministic on every device);
//   - NaN scores are never selected, and counted (the second output);
//   - fp32 and bf16 (and fp16) scores of any shape; the mask has the scores' shape.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <utility>

namespace rho {

// Returns {mask (bool, scores' shape), nan_count (int64 scalar tensor on the scores' device)}.
std::pair<at::Tensor, at::Tensor> topk_mask(const at::Tensor& scores, int64_t k);
// The same with k an int64 scalar tensor on the scores' device (operator rho::topk_mask.k_tensor): a k computed
// on the GPU (e.g. from a count of valid tokens) is read there, with no copy to the host. A negative k selects
// nothing.
std::pair<at::Tensor, at::Tensor> topk_mask(const at::Tensor& scores, const at::Tensor& k);
}  // namespace rho
