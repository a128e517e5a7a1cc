#include "librho/train/adamw.h"

#include <ATen/ops/_foreach_add.h>
#include <ATen/ops/_foreach_mul.h>
#include <ATen/ops/_foreach_norm.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/zeros.h>
#include <cmath>
#include <optional>
#include <ATen/ops/_fused_adamw.h>
#include <ATen/ops/zeros_like.h>
#include <ATen/ops/scalar_tensor.h>
#include <fmt/format.h>

#include <map>

#include "librho/util/error.h"

namespace rho {

AdamW::AdamW(std::vector<Group> groups, double beta1, double beta2, double eps)
    : groups_(std::move(groups)), beta1_(beta1), beta2_(beta2), eps_(eps) {
  for (const auto& g : groups_) {
    std::vector<at::Tensor> m, v, s;
    for (const auto& p : g.params) {
      m.push_back(at::zeros_like(p, at::MemoryFormat::Contiguous));
      v.push_back(at::zeros_like(p, at::MemoryFormat::Contiguous));
      s.push_back(at::scalar_tensor(0.0, p.options().dtype(at::kFloat)));
    }
    exp_avg_.push_back(std::move(m));
    exp_avg_sq_.push_back(std::move(v));
    step_tensors_.push_back(std::move(s));
  }
}

void AdamW::step(double lr, const at::Tensor& found_inf) {
  at::NoGradGuard no_grad;
  for (size_t g = 0; g < groups_.size(); ++g) {
    std::vector<at::Tensor> params, grads, m, v, steps;
    for (size_t i = 0; i < groups_[g].params.size(); ++i) {
      const auto& p = groups_[g].params[i];
      if (!p.grad().defined()) continue;
      params.push_back(p);
      grads.push_back(p.grad());
      m.push_back(exp_avg_[g][i]);
      v.push_back(exp_avg_sq_[g][i]);
      steps.push_back(step_tensors_[g][i]);
    }
    if (params.empty()) continue;
    at::_foreach_add_(steps, 1);  // the fused kernel reads the step count; the caller advances it (as torch.optim)
    const auto inf = found_inf.defined() ? std::optional<at::Tensor>(found_inf) : std::nullopt;
    at::_fused_adamw_(params, grads, m, v, {}, steps, lr, beta1_, beta2_, groups_[g].weight_decay, eps_,
                      /*amsgrad=*/false, /*maximize=*/false, /*grad_scale=*/std::nullopt, inf);
    if (inf) at::_foreach_add_(steps, *inf, -1);  // a skipped step does not count (as torch.optim with a scaler)
  }
}

void AdamW::zero_grad() {
  for (auto& g : groups_)
    for (auto& p : g.params)
      if (p.grad().defined()) p.mutable_grad().zero_();
}

std::vector<std::pair<std::string, at::Tensor>> AdamW::state() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (size_t g = 0; g < groups_.size(); ++g)
    for (size_t i = 0; i < groups_[g].params.size(); ++i) {
      out.emplace_back("exp_avg." + groups_[g].names[i], exp_avg_[g][i]);
      out.emplace_back("exp_avg_sq." + groups_[g].names[i], exp_avg_sq_[g][i]);
      out.emplace_back("step." + groups_[g].names[i], step_tensors_[g][i]);
    }
  return out;
}

void AdamW::load_state(const std::vector<std::pair<std::string, at::Tensor>>& state, const std::string& source) {
  std::map<std::string, at::Tensor> by_name(state.begin(), state.end());
  at::NoGradGuard no_grad;
  auto take = [&](const std::string& name, at::Tensor& dst) {
    auto it = by_name.find(name);
    if (it == by_name.end()) throw Error(fmt::format("{}: optimizer state lacks '{}'", source, name));
    if (it->second.sizes() != dst.sizes())
      throw Error(fmt::format("{}: optimizer state '{}' has the wrong shape", source, name));
    dst.copy_(it->second);
  };
  for (size_t g = 0; g < groups_.size(); ++g)
    for (size_t i = 0; i < groups_[g].params.size(); ++i) {
      take("exp_avg." + groups_[g].names[i], exp_avg_[g][i]);
      take("exp_avg_sq." + groups_[g].names[i], exp_avg_sq_[g][i]);
      take("step." + groups_[g].names[i], step_tensors_[g][i]);
    }
}

std::vector<AdamW::Group> adamw_groups(const std::vector<std::pair<std::string, at::Tensor>>& named_params,
                                       double weight_decay, bool decay_norms_and_embeddings) {
  AdamW::Group decay, no_decay;
  decay.weight_decay = weight_decay;
  for (const auto& [name, p] : named_params) {
    const bool exempt = !decay_norms_and_embeddings && (p.dim() < 2 || name.find("embed_tokens") != std::string::npos);
    auto& g = exempt ? no_decay : decay;
    g.names.push_back(name);
    g.params.push_back(p);
  }
  return {decay, no_decay};
}

at::Tensor clip_grad_norm(const std::vector<at::Tensor>& params, double max_norm) {
  std::vector<at::Tensor> grads;
  for (const auto& p : params)
    if (p.grad().defined()) grads.push_back(p.grad());
  if (grads.empty()) return at::zeros({}, params.at(0).options().dtype(at::kFloat));
  at::NoGradGuard no_grad;
  const auto total = at::stack(at::_foreach_norm(grads, 2)).norm(2);
  if (std::isfinite(max_norm)) at::_foreach_mul_(grads, (max_norm / (total + 1e-6)).clamp_max(1.0));
  return total;
}

}  // namespace rho
