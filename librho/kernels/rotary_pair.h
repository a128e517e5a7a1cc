#pragma once
// Internal to rotary (librho/kernels/rotary.h): where a row's elements are, and one pair (j, j + half) of a row,
// shared by the CPU loop and the CUDA kernel so that both compute the same thing in the same way.
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <c10/macros/Macros.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>
#include <type_traits>

namespace rho {
namespace kernels {

constexpr int kRotaryMaxDims = 6;  // dimensions before the last
enum RotaryOperand { kRotaryX = 0, kRotaryCos = 1, kRotarySin = 2, kRotaryOut = 3 };

// The four operands' strides (in elements; cos and sin expanded to x's shape, so broadcast dimensions have
// stride 0). A row is one index of the dimensions before the last; its pairs are (j, j + half), j < half.
struct RotaryGeometry {
  int dims = 0;                                   // dimensions before the last
  int64_t size[kRotaryMaxDims] = {};              // their sizes
  int64_t stride[4][kRotaryMaxDims] = {};         // [operand][dimension]
  int64_t last_stride[4] = {};                    // [operand]: the last dimension's stride
  int64_t half = 0;                               // half the last dimension
  int64_t rows = 0;                               // product of size[0..dims)
  bool fits_int32 = false;                        // every pair index and offset below 2^30 (32-bit index math)
};

// Fills a geometry from x, cos and sin_signed expanded to x's shape, and the output (rotary_supports holds).
RotaryGeometry rotary_geometry(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin_signed,
                               const at::Tensor& out);

// The arithmetic has internal linkage (an unnamed namespace): rotary.cpp is built with -ffp-contract=off, and a
// copy of these functions built without that flag elsewhere must never be the one the linker keeps for it.
namespace {

// Products and sums rounded as ATen's element-wise kernels round them: in at::opmath_type<T> (fp32 for bf16 and
// fp16), each result rounded to T; fp32 and fp64 exactly rounded, never fused into a multiply-add.
// Exactly rounded: on a GPU the _rn intrinsics, which the compiler never fuses into a multiply-add.
template <typename F>
C10_HOST_DEVICE inline F rotary_mul(F a, F b) {
#ifdef __CUDA_ARCH__
  if constexpr (std::is_same_v<F, float>) return __fmul_rn(a, b);
  else return __dmul_rn(a, b);
#else
  return a * b;  // the file that calls it is built with -ffp-contract=off
#endif
}
template <typename F>
C10_HOST_DEVICE inline F rotary_add(F a, F b) {
#ifdef __CUDA_ARCH__
  if constexpr (std::is_same_v<F, float>) return __fadd_rn(a, b);
  else return __dadd_rn(a, b);
#else
  return a + b;
#endif
}

// round(round(a * b) + round(c * d)), each rounding to T.
template <typename T>
C10_HOST_DEVICE inline T rotary_dot2(T a, T b, T c, T d) {
  using F = at::opmath_type<T>;
  const T ab = static_cast<T>(rotary_mul(static_cast<F>(a), static_cast<F>(b)));
  const T cd = static_cast<T>(rotary_mul(static_cast<F>(c), static_cast<F>(d)));
  return static_cast<T>(rotary_add(static_cast<F>(ab), static_cast<F>(cd)));
}

// Each operand's offset (in elements) of the row's first element, in index type I (int64_t, or int32_t where
// the geometry fits_int32: a GPU divides 32-bit integers several times faster).
template <typename I>
C10_HOST_DEVICE inline void rotary_row_offsets(const RotaryGeometry& g, I row, I offset[4]) {
  for (int o = 0; o < 4; ++o) offset[o] = 0;
  for (int d = g.dims - 1; d >= 0; --d) {
    const I size = static_cast<I>(g.size[d]);
    const I index = row % size;
    row /= size;
    for (int o = 0; o < 4; ++o) offset[o] += index * static_cast<I>(g.stride[o][d]);
  }
}

// Output elements j and j + half of the row whose offsets are given. Forward: out1 = x1 c1 + x2 s1,
// out2 = x2 c2 + x1 s2 (x * cos + cat(x2, x1) * sin_signed). Transpose: out1 = x1 c1 + x2 s2, out2 = x2 c2 + x1 s1
// (x * cos + cat(t2, t1), t = x * sin_signed).
template <typename T, typename I>
C10_HOST_DEVICE inline void rotary_pair(const RotaryGeometry& g, const I offset[4], I j, const T* x, const T* cos,
                                        const T* sin, T* out, bool transpose) {
  const I k = j + static_cast<I>(g.half);
  auto element = [&](int o, I column) { return offset[o] + column * static_cast<I>(g.last_stride[o]); };
  const T x1 = x[element(kRotaryX, j)], x2 = x[element(kRotaryX, k)];
  const T c1 = cos[element(kRotaryCos, j)], c2 = cos[element(kRotaryCos, k)];
  const T s1 = sin[element(kRotarySin, j)], s2 = sin[element(kRotarySin, k)];
  out[element(kRotaryOut, j)] = rotary_dot2(x1, c1, x2, transpose ? s2 : s1);
  out[element(kRotaryOut, k)] = rotary_dot2(x2, c2, x1, transpose ? s1 : s2);
}

}  // namespace

}  // namespace kernels
}  // namespace rho
