#pragma once
// Internal to the top-k kernels and SLM's selection (not part of librho.h): the order-preserving key that the CPU
// and CUDA top-k kernels and the distributed radix select share.
#include <cstdint>

namespace rho {

namespace kernels {
// An order-preserving map from a float to uint32 (larger float -> larger key); NaN maps to 0, which no
// other value reaches, so "key > 0" means "not NaN"; -0.0 and +0.0 map to the same key (they are equal, so the
// tie rule, lower index first, decides between them). Shared by the CPU and CUDA kernels.
#if defined(__CUDACC__)
__host__ __device__
#endif
inline uint32_t topk_key(float f) {
  uint32_t b;
#if defined(__CUDA_ARCH__)
  b = __float_as_uint(f);
#else
  __builtin_memcpy(&b, &f, 4);
#endif
  if ((b & 0x7f800000u) == 0x7f800000u && (b & 0x007fffffu)) return 0u;  // NaN
  if (b == 0x80000000u) b = 0u;                                          // -0.0 is +0.0
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}
}  // namespace kernels

}  // namespace rho
