// CUDA kernel of rho::fused_sum (librho/kernels/fused_sum.h): a grid-stride loop over the parts as flat arrays
// (fused_sum_supports asks for one dense layout), with fused_sum_math.h's sum.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>
#include <vector>

#include "librho/kernels/grid_stride.cuh"
#include "librho/kernels/fused_sum_math.h"

namespace rho {
namespace kernels {
namespace {

template <typename T, int N>
struct FusedSumArgs {
  const T* parts[N];
  float* out;
  int64_t n;
};

template <typename T, int N>
__global__ void fused_sum_kernel(const FusedSumArgs<T, N> a) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < a.n; i += (int64_t)gridDim.x * blockDim.x)
    a.out[i] = fused_sum_at<T, N>(a.parts, i);
}

template <typename T, int N>
void launch(const std::vector<at::Tensor>& parts, const at::Tensor& out) {
  FusedSumArgs<T, N> a;
  for (int k = 0; k < N; ++k) a.parts[k] = parts[k].const_data_ptr<T>();
  a.out = out.mutable_data_ptr<float>();
  a.n = out.numel();
  fused_sum_kernel<T, N><<<grid_stride_blocks(a.n), kGridStrideThreads, 0, at::cuda::getCurrentCUDAStream()>>>(a);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}
}  // namespace

void fused_sum_cuda(const std::vector<at::Tensor>& parts, const at::Tensor& out) {
  const c10::cuda::CUDAGuard guard(out.device());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, parts.front().scalar_type(), "fused_sum_cuda", [&] {
    parts.size() == 2 ? launch<scalar_t, 2>(parts, out) : launch<scalar_t, 3>(parts, out);
  });
}

}  // namespace kernels
}  // namespace rho
