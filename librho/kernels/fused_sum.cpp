// rho::fused_sum: the checks, the TensorIterator, and the CPU loop (the CUDA kernel is fused_sum.cu).
#include "librho/kernels/fused_sum.h"
#include "librho/kernels/fused_sum_loops.h"
#include "librho/kernels/operands.h"

#include <ATen/Dispatch.h>
#include <ATen/native/cpu/Loops.h>
#include <ATen/ops/empty_like.h>
#include <ATen/record_function.h>

namespace rho {

namespace kernels {
#ifdef RHO_WITH_CUDA
void fused_sum_cuda(at::TensorIterator& iter, size_t parts);  // fused_sum.cu
#endif

at::TensorIterator fused_sum_iterator(const at::Tensor& out, const std::vector<at::Tensor>& parts) {
  at::TensorIteratorConfig config;
  config.add_output(out).check_all_same_dtype(false).promote_inputs_to_common_dtype(false).resize_outputs(false);
  for (const auto& p : parts) config.add_const_input(p);
  return config.build();
}
}  // namespace kernels

namespace {
void fused_sum_cpu(at::TensorIterator& iter, size_t parts) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, iter.input_dtype(0), "fused_sum_cpu", [&] {
    using T = scalar_t;
    using kernels::fused_sum_of;
    if (parts == 2) at::native::cpu_kernel(iter, [](T a, T b) -> float { return fused_sum_of(a, b); });
    if (parts == 3) at::native::cpu_kernel(iter, [](T a, T b, T c) -> float { return fused_sum_of(a, b, c); });
    if (parts == 4) at::native::cpu_kernel(iter, [](T a, T b, T c, T d) -> float { return fused_sum_of(a, b, c, d); });
  });
}
}  // namespace

bool fused_sum_supports(const std::vector<at::Tensor>& parts) {
  if (parts.size() < 2 || parts.size() > 4) return false;
  const auto& first = parts.front();
  for (const auto& p : parts) {
    if (!kernels::plain_operand(p) || p.scalar_type() != first.scalar_type() || p.device() != first.device() ||
        p.sizes() != first.sizes())
      return false;
  }
  const auto t = first.scalar_type();
  return (t == at::kFloat || t == at::kBFloat16 || t == at::kHalf) && kernels::kernels_run_on(first.device());
}

at::Tensor fused_sum(const std::vector<at::Tensor>& parts) {
  TORCH_CHECK(fused_sum_supports(parts), "fused_sum: unsupported parts: ", parts.size(), " of ",
              parts.empty() || !parts.front().defined() ? "-" : c10::toString(parts.front().scalar_type()));
  RECORD_FUNCTION("rho::fused_sum", std::vector<c10::IValue>{});  // names its kernel in profiles
  at::Tensor out = at::empty_like(parts.front(), parts.front().options().dtype(at::kFloat));
  if (out.numel() == 0) return out;
  auto iter = kernels::fused_sum_iterator(out, parts);
#ifdef RHO_WITH_CUDA
  if (out.is_cuda()) {
    kernels::fused_sum_cuda(iter, parts.size());
    return out;
  }
#endif
  fused_sum_cpu(iter, parts.size());
  return out;
}

}  // namespace rho
