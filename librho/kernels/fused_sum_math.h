#pragma once
// Internal to fused_sum (librho/kernels/fused_sum.h): element i of the sum, shared by the CPU loop and the CUDA
// kernel.
#include <c10/macros/Macros.h>

#include <cstdint>

namespace rho {
namespace kernels {
namespace {  // internal linkage: see rotary_pair.h

// ((p0 + p1) + p2) + p3 at element i, in fp32, in the parts' order (fp32 additions are exactly rounded; there is
// nothing to fuse them with).
template <typename T, int N>
C10_HOST_DEVICE inline float fused_sum_at(const T* const* parts, int64_t i) {
  float sum = static_cast<float>(parts[0][i]);
  for (int k = 1; k < N; ++k) sum = sum + static_cast<float>(parts[k][i]);
  return sum;
}

}  // namespace
}  // namespace kernels
}  // namespace rho
