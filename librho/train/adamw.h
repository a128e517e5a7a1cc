#pragma once
// AdamW over parameter groups with torch's fused kernel (at::_fused_adamw_, CPU and CUDA): one call per
// group instead of a loop of small ops per parameter. State is plain tensors so checkpoints are exact.
#include <ATen/core/Tensor.h>

#include <string>
#include <utility>
#include <vector>

namespace rho {

class AdamW {
 public:
  struct Group {
    std::vector<std::string> names;
    std::vector<at::Tensor> params;
    double weight_decay = 0;
  };
  AdamW(std::vector<Group> groups, double beta1, double beta2, double eps);
  // Parameters without a gradient are left alone. found_inf (a float scalar on the parameters' device, or
  // undefined): where it is 1 the step changes nothing, step counts included, and nothing is read by the host.
  void step(double lr, const at::Tensor& found_inf = {});
  void zero_grad();
  // exp_avg.<name>, exp_avg_sq.<name> and "step", for checkpoints; load_state checks names and shapes.
  std::vector<std::pair<std::string, at::Tensor>> state() const;
  void load_state(const std::vector<std::pair<std::string, at::Tensor>>& state, const std::string& source);
  const std::vector<Group>& groups() const { return groups_; }

 private:
  std::vector<Group> groups_;
  std::vector<std::vector<at::Tensor>> exp_avg_, exp_avg_sq_, step_tensors_;
  double beta1_, beta2_, eps_;
};

// rho_pretrain's groups over (name, parameter) pairs in registration order: weight decay on matrices, none on
// norms (parameters of dimension < 2) and embeddings (names containing "embed_tokens") unless
// decay_norms_and_embeddings. Two groups, decayed first.
std::vector<AdamW::Group> adamw_groups(const std::vector<std::pair<std::string, at::Tensor>>& named_params,
                                       double weight_decay, bool decay_norms_and_embeddings);

// Gradient-norm clipping as torch.nn.utils.clip_grad_norm_, kept on the device: returns the total 2-norm (a
// scalar tensor) and scales the gradients by min(1, max_norm / (norm + 1e-6)) without reading the norm
// (max_norm infinite: no scaling).
at::Tensor clip_grad_norm(const std::vector<at::Tensor>& params, double max_norm);

}  // namespace rho
