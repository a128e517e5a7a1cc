// rho::swiglu_values / swiglu_gradients: the checks and the CPU loops (the CUDA kernels are swiglu.cu).
#include "librho/kernels/swiglu.h"
#include "librho/kernels/elementwise.h"
#include "librho/kernels/operands.h"
#include "librho/kernels/swiglu_math.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty_like.h>
#include <ATen/record_function.h>

namespace rho {

namespace kernels {
#ifdef RHO_WITH_CUDA
void swiglu_values_cuda(const at::Tensor& gate, const at::Tensor& up, const at::Tensor& out);  // swiglu.cu
void swiglu_gradients_cuda(const at::Tensor& g, const at::Tensor& gate, const at::Tensor& up,
                           const at::Tensor& grad_gate, const at::Tensor& grad_up);  // swiglu.cu
#endif
}  // namespace kernels

namespace {
constexpr int64_t kSwigluGrain = 32768;  // elements per CPU task

void swiglu_values_cpu(const at::Tensor& gate, const at::Tensor& up, const at::Tensor& out) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, gate.scalar_type(), "swiglu_values_cpu", [&] {
    const scalar_t *a = gate.const_data_ptr<scalar_t>(), *b = up.const_data_ptr<scalar_t>();
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, out.numel(), kSwigluGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) o[i] = kernels::swiglu_value(a[i], b[i]);
    });
  });
}

void swiglu_gradients_cpu(const at::Tensor& g, const at::Tensor& gate, const at::Tensor& up,
                          const at::Tensor& grad_gate, const at::Tensor& grad_up) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, gate.scalar_type(), "swiglu_gradients_cpu", [&] {
    const scalar_t *gp = g.const_data_ptr<scalar_t>(), *a = gate.const_data_ptr<scalar_t>(),
                   *b = up.const_data_ptr<scalar_t>();
    scalar_t *da = grad_gate.mutable_data_ptr<scalar_t>(), *db = grad_up.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, gate.numel(), kSwigluGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) kernels::swiglu_gradient(gp[i], a[i], b[i], da[i], db[i]);
    });
  });
}
}  // namespace

bool swiglu_supports(const at::Tensor& gate, const at::Tensor& up, const at::Tensor& g) {
  std::vector<const at::Tensor*> all{&gate, &up};
  if (g.defined()) all.push_back(&g);
  for (const auto* t : all)
    if (!kernels::plain_operand(*t) || t->scalar_type() != gate.scalar_type() || t->device() != gate.device())
      return false;
  const auto t = gate.scalar_type();
  return (t == at::kFloat || t == at::kBFloat16 || t == at::kHalf) && kernels::same_dense_layout(all) &&
         kernels::kernels_run_on(gate.device());
}

at::Tensor swiglu_values(const at::Tensor& gate, const at::Tensor& up) {
  TORCH_CHECK(swiglu_supports(gate, up), "swiglu_values: unsupported operands: gate ", gate.sizes(), " ",
              gate.scalar_type(), ", up ", up.sizes(), " ", up.scalar_type());
  RECORD_FUNCTION("rho::swiglu_values", std::vector<c10::IValue>{});  // names its kernel in profiles
  at::Tensor out = at::empty_like(gate);
  if (out.numel() == 0) return out;
#ifdef RHO_WITH_CUDA
  if (gate.is_cuda()) {
    kernels::swiglu_values_cuda(gate, up, out);
    return out;
  }
#endif
  swiglu_values_cpu(gate, up, out);
  return out;
}

std::pair<at::Tensor, at::Tensor> swiglu_gradients(const at::Tensor& g, const at::Tensor& gate, const at::Tensor& up) {
  TORCH_CHECK(g.defined() && swiglu_supports(gate, up, g), "swiglu_gradients: unsupported operands: g ",
              g.defined() ? c10::toString(g.scalar_type()) : "undefined", ", gate ", gate.sizes(), " ",
              gate.scalar_type(), ", up ", up.sizes(), " ", up.scalar_type());
  RECORD_FUNCTION("rho::swiglu_gradients", std::vector<c10::IValue>{});
  at::Tensor grad_gate = at::empty_like(gate), grad_up = at::empty_like(up);
  if (gate.numel() == 0) return {grad_gate, grad_up};
#ifdef RHO_WITH_CUDA
  if (gate.is_cuda()) {
    kernels::swiglu_gradients_cuda(g, gate, up, grad_gate, grad_up);
    return {grad_gate, grad_up};
  }
#endif
  swiglu_gradients_cpu(g, gate, up, grad_gate, grad_up);
  return {grad_gate, grad_up};
}

}  // namespace rho
