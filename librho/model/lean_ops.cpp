#include "librho/model/lean_ops.h"

#include <ATen/autocast_mode.h>
#include <ATen/ops/_fused_rms_norm.h>
#include <ATen/ops/_fused_rms_norm_backward.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/rsqrt.h>
#include <ATen/ops/silu.h>
#include <ATen/ops/silu_backward.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/csrc/autograd/custom_function.h>

#include "librho/kernels/fused_sum.h"
#include "librho/kernels/operands.h"
#include "librho/kernels/swiglu.h"

namespace rho {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// y = x / rms(x) over the last dimension in fp32, and the reciprocal RMS r of each row (one fp32 per row). On CUDA
// through torch's fused kernel (what at::rms_norm runs there), elsewhere as at::rms_norm's decomposition.
std::pair<at::Tensor, at::Tensor> normalise(const at::Tensor& xf, double eps) {
  if (xf.is_cuda()) {
    auto [y, r] = at::_fused_rms_norm(xf, {xf.size(-1)}, std::nullopt, eps);
    return {y, r};
  }
  const auto r = at::rsqrt(xf.pow(2).mean(-1, true).add(eps));
  return {xf * r, r};
}

// out = weight.to(dt) * y.to(dt), dt = x's dtype (transformers' LlamaRMSNorm), and r.
std::pair<at::Tensor, at::Tensor> rms_norm_values(const at::Tensor& x, const at::Tensor& weight, double eps) {
  const auto [y, r] = normalise(x.to(at::kFloat), eps);
  return {weight.to(x.scalar_type()) * y.to(x.scalar_type()), r};
}

// Gradients of out (rms_norm_values). On CUDA with fp32 x and weight (training under autocast), both from torch's
// fused backward kernel. Otherwise the weight's as autograd's mul and cast compute it, and x's from the fused kernel
// on CUDA, elsewhere by autograd's formulas for each operation of the decomposition (mul, rsqrt, mean, pow), applied
// in the same order.
struct RmsNormFunction : torch::autograd::Function<RmsNormFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight, double eps) {
    auto [out, r] = rms_norm_values(x, weight, eps);
    ctx->save_for_backward({x, weight, r});
    return out;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    // r is saved as a constant and the CUDA kernel has no derivative of its own: second derivatives would be wrong.
    TORCH_CHECK(!at::GradMode::is_enabled(), "rho::rms_norm: no double backward (create_graph)");
    const auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &weight = saved[1], &r = saved[2], &g = grads[0];
    if (x.is_cuda() && x.scalar_type() == at::kFloat && weight.scalar_type() == at::kFloat) {
      // Both gradients from the fused kernel, as at::rms_norm's own backward on CUDA: g * weight inside it, and the
      // weight's gradient summed there (in another order than sum_to_size: equal to fp32 rounding).
      auto [grad_x, grad_weight] = at::_fused_rms_norm_backward(g, x, {x.size(-1)}, r, weight,
                                                               {ctx->needs_input_grad(0), ctx->needs_input_grad(1)});
      return {grad_x, grad_weight, at::Tensor()};
    }
    const auto xf = x.to(at::kFloat);
    at::Tensor grad_x, grad_weight;
    if (ctx->needs_input_grad(1))
      grad_weight = (g * (xf * r).to(x.scalar_type())).sum_to_size(weight.sizes()).to(weight.scalar_type());
    if (ctx->needs_input_grad(0)) {
      const auto gy = (g * weight.to(x.scalar_type())).to(at::kFloat);
      if (x.is_cuda()) {
        grad_x = std::get<0>(at::_fused_rms_norm_backward(gy, xf, {x.size(-1)}, r, std::nullopt, {true, false}));
      } else {
        const auto gr = (gy * xf).sum(-1, true);                                       // mul, towards r
        const auto gmean = (-0.5 * gr * r.pow(3)).expand(xf.sizes()) / xf.size(-1);  // rsqrt, then mean
        grad_x = gy * r + gmean * (2.0 * xf.pow(1.0));                                // mul towards xf, plus pow
      }
      grad_x = grad_x.to(x.scalar_type());
    }
    return {grad_x, grad_weight, at::Tensor()};
  }
};

// silu(gate) * up: on CUDA one kernel (rho::swiglu_values, the same values), else the operations.
at::Tensor swiglu_forward(const at::Tensor& gate, const at::Tensor& up) {
  if (gate.is_cuda() && !kernels::autograd_records({gate, up}) && swiglu_supports(gate, up))
    return swiglu_values(gate, up);
  return at::silu(gate) * up;
}

struct SwigluFunction : torch::autograd::Function<SwigluFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& gate, const at::Tensor& up) {
    ctx->save_for_backward({gate, up});
    return swiglu_forward(gate, up);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto &gate = saved[0], &up = saved[1], &g = grads[0];
    // Both gradients on CUDA: one kernel (rho::swiglu_gradients, the same values).
    if (ctx->needs_input_grad(0) && ctx->needs_input_grad(1) && g.is_cuda() &&
        !kernels::autograd_records({g, gate, up}) && swiglu_supports(gate, up, g)) {
      auto [grad_gate, grad_up] = swiglu_gradients(g, gate, up);
      return {grad_gate, grad_up};
    }
    at::Tensor grad_gate, grad_up;
    if (ctx->needs_input_grad(0)) grad_gate = at::silu_backward(g * up, gate);
    if (ctx->needs_input_grad(1)) grad_up = g * at::silu(gate);
    return {grad_gate, grad_up};
  }
};

// Under autocast: the product in autocast's dtype of x and the low-precision copies of weight and bias (made by
// rho::linear, through autocast's cache; they carry no gradient edge here, weight and bias do); the gradients of
// weight and bias in fp32 (the GEMM's own fp32 output on CUDA), x's in x's dtype. Without a bias, `bias` and
// `bias16` are empty placeholders (autograd's inputs must be defined tensors).
struct AutocastLinearFunction : torch::autograd::Function<AutocastLinearFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                            const at::Tensor& weight16, const at::Tensor& bias16) {
    (void)weight;  // an input for its gradient edge; the product reads weight16
    const auto x16 = x.to(weight16.scalar_type());
    ctx->save_for_backward({x16, weight16});
    ctx->saved_data["x_dtype"] = static_cast<int64_t>(x.scalar_type());
    ctx->saved_data["bias"] = bias.numel() > 0;
    c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);  // cast once, by rho::linear
    return bias.numel() > 0 ? at::linear(x16, weight16, bias16) : at::linear(x16, weight16);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto &x16 = saved[0], &w16 = saved[1];
    const auto g = grads[0].to(x16.scalar_type());
    const auto g2 = g.reshape({-1, g.size(-1)}), x2 = x16.reshape({-1, x16.size(-1)});
    at::Tensor grad_x, grad_w, grad_b;
    if (ctx->needs_input_grad(0))
      grad_x = g.matmul(w16).to(static_cast<at::ScalarType>(ctx->saved_data["x_dtype"].toInt()));
    if (ctx->needs_input_grad(1))
      grad_w = mm_as(g2.t(), x2, at::kFloat);
    if (ctx->saved_data["bias"].toBool() && ctx->needs_input_grad(2))
      grad_b = g.is_cuda() ? g2.sum(0, false, at::kFloat) : g2.sum(0).to(at::kFloat);
    return {grad_x, grad_w, grad_b, at::Tensor(), at::Tensor()};
  }
};

// Hands out `copy` (x already cast, no gradient of its own) once per projection, each a view with a gradient edge
// to x: the projections' gradients arrive in copy's dtype, and x's is their sum in x's dtype, formed in one place
// (sum_as) rather than cast and accumulated projection by projection.
struct SharedCastFunction : torch::autograd::Function<SharedCastFunction> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& copy, int64_t n) {
    ctx->saved_data["dtype"] = static_cast<int64_t>(x.scalar_type());
    ctx->set_materialize_grads(false);  // a view no projection used has no gradient, not zeros
    // An input returned as is: autograd makes each a view of its own with this node as its gradient function.
    return variable_list(static_cast<size_t>(n), copy);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {sum_as(grads, static_cast<at::ScalarType>(ctx->saved_data["dtype"].toInt())), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor sum_as(const std::vector<at::Tensor>& parts, at::ScalarType dtype) {
  std::vector<at::Tensor> defined;
  for (const auto& p : parts)
    if (p.defined()) defined.push_back(p);
  // On CUDA one pass (rho::fused_sum, the same values) where autograd does not record.
  if (dtype == at::kFloat && !defined.empty() && defined.front().is_cuda() &&
      !kernels::autograd_records(defined) && fused_sum_supports(defined))
    return fused_sum(defined);
  at::Tensor sum;
  for (const auto& p : defined) {
    if (!sum.defined()) sum = p.to(dtype, /*non_blocking=*/false, /*copy=*/true);  // owned: added to in place
    else sum.add_(p);  // in `dtype`: p's values converted (exactly, to a wider type), then added
  }
  return sum;
}

at::Tensor mm_as(const at::Tensor& a, const at::Tensor& b, at::ScalarType dtype) {
  return a.is_cuda() ? at::mm(a, b, dtype) : at::mm(a, b).to(dtype);
}

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  if (at::GradMode::is_enabled() && (x.requires_grad() || weight.requires_grad()))
    return RmsNormFunction::apply(x, weight, eps);
  return rms_norm_values(x, weight, eps).first;
}

at::Tensor swiglu(const at::Tensor& gate, const at::Tensor& up) {
  if (at::GradMode::is_enabled() && (gate.requires_grad() || up.requires_grad())) return SwigluFunction::apply(gate, up);
  return swiglu_forward(gate, up);
}

at::Tensor linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  const auto device = x.device().type();
  const bool lean = at::GradMode::is_enabled() && at::autocast::is_autocast_enabled(device) &&
                    weight.scalar_type() == at::kFloat && (!bias.defined() || bias.scalar_type() == at::kFloat) &&
                    (x.requires_grad() || weight.requires_grad() || (bias.defined() && bias.requires_grad()));
  if (!lean) return bias.defined() ? at::linear(x, weight, bias) : at::linear(x, weight);
  // The copies are made here, with gradients on, as autocast makes them: a copy cached for the scope then has its
  // gradient edge for any later plain use of the same weight.
  const auto dt = at::autocast::get_autocast_dtype(device);
  const auto none = at::empty({0}, weight.options());
  return AutocastLinearFunction::apply(x, weight, bias.defined() ? bias : none,
                                       at::autocast::cached_cast(dt, weight, device).detach(),
                                       bias.defined() ? at::autocast::cached_cast(dt, bias, device).detach() : none);
}

SharedInput::SharedInput(const at::Tensor& x, int64_t n) {
  TORCH_CHECK(n > 0, "SharedInput: n must be positive, got ", n);
  const auto device = x.device().type();
  if (x.scalar_type() != at::kFloat || !at::autocast::is_autocast_enabled(device)) {
    views_.assign(static_cast<size_t>(n), x);
    return;
  }
  const auto copy = x.detach().to(at::autocast::get_autocast_dtype(device));
  if (at::GradMode::is_enabled() && x.requires_grad())
    views_ = SharedCastFunction::apply(x, copy, n);
  else
    views_.assign(static_cast<size_t>(n), copy);
}

const at::Tensor& SharedInput::view(int64_t i) const { return views_.at(static_cast<size_t>(i)); }

}  // namespace rho
