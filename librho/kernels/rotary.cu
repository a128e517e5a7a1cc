// CUDA kernel of rho::rotary (librho/kernels/rotary.h): one thread per pair (j, j + half) of a row, consecutive
// threads on consecutive j, so that each of the six reads and two writes of a warp is one contiguous run where the
// last dimension is. The arithmetic is rotary_pair's (rotary_pair.h), shared with the CPU loop.
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>

#include "librho/kernels/grid_stride.cuh"
#include "librho/kernels/rotary_pair.h"

namespace rho {
namespace kernels {
namespace {

// I: int32_t where the geometry fits_int32, else int64_t (index arithmetic is most of this kernel's instructions).
template <typename T, typename I>
__global__ void rotary_kernel(const RotaryGeometry g, const T* __restrict__ x, const T* __restrict__ cos,
                              const T* __restrict__ sin, T* __restrict__ out, bool transpose) {
  const I pairs = static_cast<I>(g.rows * g.half), half = static_cast<I>(g.half);
  const I step = static_cast<I>(gridDim.x) * static_cast<I>(blockDim.x);
  for (I i = static_cast<I>(blockIdx.x) * static_cast<I>(blockDim.x) + static_cast<I>(threadIdx.x); i < pairs;
       i += step) {
    I offset[4];
    rotary_row_offsets<I>(g, i / half, offset);
    rotary_pair<T, I>(g, offset, i % half, x, cos, sin, out, transpose);
  }
}

}  // namespace

void rotary_cuda(const RotaryGeometry& g, const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin_signed,
                 const at::Tensor& out, bool transpose) {
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t pairs = g.rows * g.half;
  const unsigned blocks = grid_stride_blocks(pairs);
  const auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "rotary_cuda", [&] {
    const auto launch = [&](auto kernel) {
      kernel<<<blocks, kGridStrideThreads, 0, stream>>>(
          g, x.const_data_ptr<scalar_t>(), cos.const_data_ptr<scalar_t>(), sin_signed.const_data_ptr<scalar_t>(),
          out.mutable_data_ptr<scalar_t>(), transpose);
    };
    if (g.fits_int32)
      launch(rotary_kernel<scalar_t, int32_t>);
    else
      launch(rotary_kernel<scalar_t, int64_t>);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace kernels
}  // namespace rho
