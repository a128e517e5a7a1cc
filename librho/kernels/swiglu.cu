// CUDA kernels of rho::swiglu_values / swiglu_gradients (librho/kernels/swiglu.h): grid-stride loops over the
// operands as flat arrays (swiglu_supports asks for one dense layout), with swiglu_math.h's arithmetic.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>

#include "librho/kernels/grid_stride.cuh"
#include "librho/kernels/swiglu_math.h"

namespace rho {
namespace kernels {
namespace {

template <typename T>
__global__ void swiglu_values_kernel(const T* __restrict__ gate, const T* __restrict__ up, T* __restrict__ out,
                                     int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    out[i] = swiglu_value(gate[i], up[i]);
}

template <typename T>
__global__ void swiglu_gradients_kernel(const T* __restrict__ g, const T* __restrict__ gate, const T* __restrict__ up,
                                        T* __restrict__ grad_gate, T* __restrict__ grad_up, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    swiglu_gradient(g[i], gate[i], up[i], grad_gate[i], grad_up[i]);
}

}  // namespace

void swiglu_values_cuda(const at::Tensor& gate, const at::Tensor& up, const at::Tensor& out) {
  const c10::cuda::CUDAGuard guard(gate.device());
  const int64_t n = out.numel();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, gate.scalar_type(), "swiglu_values_cuda", [&] {
    swiglu_values_kernel<scalar_t><<<grid_stride_blocks(n), kGridStrideThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        gate.const_data_ptr<scalar_t>(), up.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), n);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void swiglu_gradients_cuda(const at::Tensor& g, const at::Tensor& gate, const at::Tensor& up,
                           const at::Tensor& grad_gate, const at::Tensor& grad_up) {
  const c10::cuda::CUDAGuard guard(gate.device());
  const int64_t n = gate.numel();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, gate.scalar_type(), "swiglu_gradients_cuda", [&] {
    swiglu_gradients_kernel<scalar_t><<<grid_stride_blocks(n), kGridStrideThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        g.const_data_ptr<scalar_t>(), gate.const_data_ptr<scalar_t>(), up.const_data_ptr<scalar_t>(),
        grad_gate.mutable_data_ptr<scalar_t>(), grad_up.mutable_data_ptr<scalar_t>(), n);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace kernels
}  // namespace rho
