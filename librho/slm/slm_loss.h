#pragma once
// Selective Language Modeling: which tokens count in the loss.
//   score  = current loss (detached) - reference loss        (rule "excess", the paper's)
//   keep   = the ceil(ratio * valid) highest scores           (rho::topk_mask; invalid tokens never kept)
//   loss   = sum of kept tokens' losses / number kept
// ExcessLossSelector does the scoring and selection over any pool of tokens (a micro-batch, a whole optimizer
// step of micro-batches); SLMLoss is the module for the common micro-batch case.
#include <torch/nn/module.h>

#include <string>
#include <vector>

namespace rho {

class DistContext;

enum class SelectionRule {
  Excess,     // current - reference: the paper's rule
  Reference,  // lowest reference loss first (score = -reference): "keep what the reference finds clean"
  Current,    // highest current loss first (score = current): hard-token mining without a reference
  Random,     // a uniformly random subset (a control)
};
enum class SelectionScope {
  MicroBatch,  // top-k inside each micro-batch
  Step,        // top-k over all micro-batches of one optimizer step (the paper's batch), per rank
  Global,      // top-k over the step's micro-batches of every rank: the global batch (data parallel)
};
SelectionRule parse_selection_rule(const std::string& s);    // excess | reference | current | random
SelectionScope parse_selection_scope(const std::string& s);  // micro_batch | step | global
std::string to_string(SelectionRule r);
std::string to_string(SelectionScope s);

struct SLMOptions {
  double ratio = 0.6;          // fraction of valid tokens kept
  double ratio_end = -1;       // < 0: constant ratio; else linear from ratio to ratio_end over ratio_steps
  int64_t ratio_steps = 0;
  SelectionRule rule = SelectionRule::Excess;
  SelectionScope scope = SelectionScope::MicroBatch;
  uint64_t seed = 0;           // for the random rule
  double ratio_at(int64_t step) const;
};

struct SelectionStats {
  int64_t valid = 0, kept = 0, nan_scores = 0;  // nan_scores: valid tokens whose score was NaN (never kept)
  double kept_score_sum = 0, dropped_score_sum = 0;
  double kept_score_mean() const;
  double dropped_score_mean() const;
  void add(const SelectionStats& o);
};

class ExcessLossSelector {
 public:
  explicit ExcessLossSelector(SLMOptions options) : opt_(std::move(options)) {}
  // Per-token scores under the rule, fp32, NaN where !valid. `draw` seeds the random rule (e.g. step * 1000 + i).
  at::Tensor score(const at::Tensor& current_loss, const at::Tensor& reference_loss, const at::Tensor& valid,
                   uint64_t draw) const;
  // Selects ceil(ratio * valid tokens) over the union of the given score tensors (one pool); returns one mask
  // per tensor. A valid token whose score is NaN (e.g. a NaN reference loss) is never kept, and counted.
  std::vector<at::Tensor> select(const std::vector<at::Tensor>& scores, const std::vector<at::Tensor>& valid,
                                 double ratio, SelectionStats* stats) const;
  // The same selection over the union of every rank's scores (concatenated in rank order), found without
  // gathering them: an exact distributed radix select on the order-preserving keys (4 all-reduces of a 256-bin
  // histogram), ties at the threshold to the lowest (rank, index) first (one all-reduce of world_size counts).
  // With one process it equals select(). Stats are this rank's part.
  std::vector<at::Tensor> select_global(const std::vector<at::Tensor>& scores, const std::vector<at::Tensor>& valid,
                                        double ratio, const DistContext& dist, SelectionStats* stats) const;
  const SLMOptions& options() const { return opt_; }

 private:
  SLMOptions opt_;
};

// sum(token_loss where mask) / denominator: the SLM loss (and the CLM loss when mask = valid).
at::Tensor masked_loss_sum(const at::Tensor& token_loss, const at::Tensor& mask, double denominator);

struct SLMLossImpl : torch::nn::Module {
  explicit SLMLossImpl(SLMOptions options) : selector(std::move(options)) {}
  // Micro-batch scope: token_loss, reference_loss [batch, seq] fp32, valid [batch, seq] bool.
  at::Tensor forward(const at::Tensor& token_loss, const at::Tensor& reference_loss, const at::Tensor& valid,
                     int64_t step);
  ExcessLossSelector selector;
  SelectionStats last_stats;
};
TORCH_MODULE(SLMLoss);

}  // namespace rho
