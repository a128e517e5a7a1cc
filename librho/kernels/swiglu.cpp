// rho::swiglu_values / swiglu_gradients: the checks, the TensorIterators, and the CPU loops (the CUDA kernels are
// swiglu.cu).
#include "librho/kernels/swiglu.h"
#include "librho/kernels/operands.h"
#include "librho/kernels/swiglu_math.h"

#include <ATen/Dispatch.h>
#include <ATen/TensorIterator.h>
#include <ATen/native/cpu/Loops.h>
#include <ATen/ops/empty_like.h>
#include <ATen/record_function.h>

#include <tuple>

namespace rho {

namespace kernels {
#ifdef RHO_WITH_CUDA
void swiglu_values_cuda(at::TensorIterator& iter);     // swiglu.cu
void swiglu_gradients_cuda(at::TensorIterator& iter);  // swiglu.cu
#endif
}  // namespace kernels

namespace {
// Outputs given (the first input's layout), inputs as they are: no promotion, one dtype throughout. The iterator
// holds its own references to the tensors (the lists are temporaries).
at::TensorIterator swiglu_iterator(const std::vector<at::Tensor>& outputs, const std::vector<at::Tensor>& inputs) {
  at::TensorIteratorConfig config;
  config.resize_outputs(false);
  for (const auto& o : outputs) config.add_owned_output(o);
  for (const auto& i : inputs) config.add_owned_const_input(i);
  return config.build();
}

void swiglu_values_cpu(at::TensorIterator& iter) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, iter.input_dtype(0), "swiglu_values_cpu", [&] {
    at::native::cpu_kernel(iter, [](scalar_t gate, scalar_t up) -> scalar_t {
      return kernels::swiglu_mul(kernels::swiglu_silu(gate), up);
    });
  });
}

void swiglu_gradients_cpu(at::TensorIterator& iter) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, iter.input_dtype(0), "swiglu_gradients_cpu", [&] {
    at::native::cpu_kernel_multiple_outputs(iter, [](scalar_t g, scalar_t gate, scalar_t up) {
      return std::make_tuple(kernels::swiglu_silu_backward(kernels::swiglu_mul(g, up), gate),
                             kernels::swiglu_mul(g, kernels::swiglu_silu(gate)));
    });
  });
}
}  // namespace

bool swiglu_supports(const at::Tensor& gate, const at::Tensor& up, const at::Tensor& g) {
  std::vector<const at::Tensor*> all{&gate, &up};
  if (g.defined()) all.push_back(&g);
  for (const auto* t : all) {
    if (!kernels::plain_operand(*t) || t->scalar_type() != gate.scalar_type() || t->device() != gate.device() ||
        t->sizes() != gate.sizes())
      return false;
  }
  const auto t = gate.scalar_type();
  return (t == at::kFloat || t == at::kBFloat16 || t == at::kHalf) && kernels::kernels_run_on(gate.device());
}

at::Tensor swiglu_values(const at::Tensor& gate, const at::Tensor& up) {
  TORCH_CHECK(swiglu_supports(gate, up), "swiglu_values: unsupported operands: gate ", gate.sizes(), " ",
              gate.scalar_type(), ", up ", up.sizes(), " ", up.scalar_type());
  RECORD_FUNCTION("rho::swiglu_values", std::vector<c10::IValue>{});  // names its kernel in profiles
  at::Tensor out = at::empty_like(gate);
  if (out.numel() == 0) return out;
  auto iter = swiglu_iterator({out}, {gate, up});
#ifdef RHO_WITH_CUDA
  if (gate.is_cuda()) {
    kernels::swiglu_values_cuda(iter);
    return out;
  }
#endif
  swiglu_values_cpu(iter);
  return out;
}

std::pair<at::Tensor, at::Tensor> swiglu_gradients(const at::Tensor& g, const at::Tensor& gate, const at::Tensor& up) {
  TORCH_CHECK(g.defined() && swiglu_supports(gate, up, g), "swiglu_gradients: unsupported operands: g ",
              g.defined() ? c10::toString(g.scalar_type()) : "undefined", ", gate ", gate.sizes(), " ",
              gate.scalar_type(), ", up ", up.sizes(), " ", up.scalar_type());
  RECORD_FUNCTION("rho::swiglu_gradients", std::vector<c10::IValue>{});
  at::Tensor grad_gate = at::empty_like(gate), grad_up = at::empty_like(up);
  if (gate.numel() == 0) return {grad_gate, grad_up};
  auto iter = swiglu_iterator({grad_gate, grad_up}, {g, gate, up});
#ifdef RHO_WITH_CUDA
  if (gate.is_cuda()) {
    kernels::swiglu_gradients_cuda(iter);
    return {grad_gate, grad_up};
  }
#endif
  swiglu_gradients_cpu(iter);
  return {grad_gate, grad_up};
}

}  // namespace rho
