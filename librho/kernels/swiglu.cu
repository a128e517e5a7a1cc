// CUDA kernels of rho::swiglu_values / swiglu_gradients (librho/kernels/swiglu.h): ATen's element-wise loops
// (gpu_kernel, gpu_kernel_multiple_outputs) over swiglu.cpp's TensorIterators, with swiglu_math.h's arithmetic.
#include <ATen/Dispatch.h>
#include <ATen/native/cuda/Loops.cuh>
#include <c10/cuda/CUDAGuard.h>
#include <thrust/tuple.h>

#include "librho/kernels/swiglu_math.h"

namespace rho {
namespace kernels {

void swiglu_values_cuda(at::TensorIterator& iter) {
  const c10::cuda::CUDAGuard guard(iter.device());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, iter.input_dtype(0), "swiglu_values_cuda", [&] {
    at::native::gpu_kernel(iter, [] GPU_LAMBDA(scalar_t gate, scalar_t up) -> scalar_t {
      return swiglu_mul(swiglu_silu(gate), up);
    });
  });
}

void swiglu_gradients_cuda(at::TensorIterator& iter) {
  const c10::cuda::CUDAGuard guard(iter.device());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, iter.input_dtype(0), "swiglu_gradients_cuda", [&] {
    at::native::gpu_kernel_multiple_outputs(
        iter, [] GPU_LAMBDA(scalar_t g, scalar_t gate, scalar_t up) -> thrust::tuple<scalar_t, scalar_t> {
          return {swiglu_silu_backward(swiglu_mul(g, up), gate), swiglu_mul(g, swiglu_silu(gate))};
        });
  });
}

}  // namespace kernels
}  // namespace rho
