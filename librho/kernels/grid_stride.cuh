#pragma once
// Internal to librho's grid-stride CUDA kernels (rotary, fused_sum, swiglu): their block size and how many blocks a
// launch over n work items takes (enough for one item per thread, at most 32 blocks per multiprocessor; each
// thread then strides over the rest).
#include <ATen/cuda/CUDAContext.h>

#include <algorithm>
#include <cstdint>

namespace rho {
namespace kernels {

constexpr int kGridStrideThreads = 256;

inline unsigned grid_stride_blocks(int64_t n) {
  const int64_t most = static_cast<int64_t>(at::cuda::getCurrentDeviceProperties()->multiProcessorCount) * 32;
  const int64_t needed = (n + kGridStrideThreads - 1) / kGridStrideThreads;
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(needed, most)));
}

}  // namespace kernels
}  // namespace rho
