// CUDA kernel of rho::fused_sum (librho/kernels/fused_sum.h): ATen's element-wise loop (gpu_kernel, vectorised
// where the parts are contiguous) over fused_sum's TensorIterator, with the sum fused_sum_loops.h defines.
#include <ATen/Dispatch.h>
#include <ATen/native/cuda/Loops.cuh>
#include <c10/cuda/CUDAGuard.h>

#include "librho/kernels/fused_sum_loops.h"

namespace rho {
namespace kernels {

void fused_sum_cuda(at::TensorIterator& iter, size_t parts) {
  const c10::cuda::CUDAGuard guard(iter.device());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, iter.input_dtype(0), "fused_sum_cuda", [&] {
    using T = scalar_t;
    if (parts == 2) at::native::gpu_kernel(iter, [] GPU_LAMBDA(T a, T b) -> float { return fused_sum_of(a, b); });
    if (parts == 3)
      at::native::gpu_kernel(iter, [] GPU_LAMBDA(T a, T b, T c) -> float { return fused_sum_of(a, b, c); });
    if (parts == 4)
      at::native::gpu_kernel(iter,
                             [] GPU_LAMBDA(T a, T b, T c, T d) -> float { return fused_sum_of(a, b, c, d); });
  });
}

}  // namespace kernels
}  // namespace rho
