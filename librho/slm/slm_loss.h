#pragma once
// Selective Language Modeling: how much each token counts in the loss.
//   score   = current loss (detached) - reference loss        (rule "excess", the paper's)
//   weights = 1 for the ceil(ratio * valid) highest scores     (weighting "hard", the paper's; rho::topk_mask)
//             or sampled / soft weights (weighting stochastic | softmax | linear)
//   loss    = sum(weight * token loss) / the step's total weight (over its micro-batches and ranks)
// Scores are pooled per sequence, micro-batch, optimizer step or global batch (scope).
//
// The API, from the top (rho_pretrain's trainer uses exactly this; so can any training loop):
//   SLMLoss        the module: options, and begin(step, micro-batches) -> SLMStep; forward() for one micro-batch
//   SLMStep        one optimizer step of any scope (or plain CLM): its denominator, the scoring pass that step
//                  and global scope need, and each micro-batch's {loss, weights}
//   ExcessLossSelector   scoring and weighting over any pool of scores (what SLMStep calls)
#include <torch/nn/module.h>

#include <string>
#include <utility>
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
  Sequence,    // top-k inside each sequence (row), as the public reimplementations do
  MicroBatch,  // top-k inside each micro-batch
  Step,        // top-k over all micro-batches of one optimizer step (the paper's batch), per rank
  Global,      // top-k over the step's micro-batches of every rank: the global batch (data parallel)
};
enum class Weighting {
  Hard,        // weight 1 for the top ceil(ratio * valid) scores, 0 for the rest (the paper)
  Stochastic,  // ceil(ratio * valid) tokens sampled without replacement, P proportional to max(score, 0)
  Softmax,     // every valid token, weight proportional to exp(score / temperature)
  Linear,      // every valid token, weight proportional to clamp(score, 0, weight_clip)
};
enum class ReferenceCombine {
  Mean,  // several reference models: the mean of their losses
  Min,   // ... or the lowest (a token is "learnable" if any reference learned it)
};
// The names configs and logs use, one table per enum (the config reader and the parsers below share them).
inline constexpr std::pair<SelectionRule, const char*> kSelectionRuleNames[] = {{SelectionRule::Excess, "excess"},
                                                                                {SelectionRule::Reference, "reference"},
                                                                                {SelectionRule::Current, "current"},
                                                                                {SelectionRule::Random, "random"}};
inline constexpr std::pair<SelectionScope, const char*> kSelectionScopeNames[] = {
    {SelectionScope::Sequence, "sequence"},
    {SelectionScope::MicroBatch, "micro_batch"},
    {SelectionScope::Step, "step"},
    {SelectionScope::Global, "global"}};
inline constexpr std::pair<Weighting, const char*> kWeightingNames[] = {{Weighting::Hard, "hard"},
                                                                        {Weighting::Stochastic, "stochastic"},
                                                                        {Weighting::Softmax, "softmax"},
                                                                        {Weighting::Linear, "linear"}};
inline constexpr std::pair<ReferenceCombine, const char*> kReferenceCombineNames[] = {{ReferenceCombine::Mean, "mean"},
                                                                                      {ReferenceCombine::Min, "min"}};
SelectionRule parse_selection_rule(const std::string& s);      // excess | reference | current | random
SelectionScope parse_selection_scope(const std::string& s);    // sequence | micro_batch | step | global
Weighting parse_weighting(const std::string& s);               // hard | stochastic | softmax | linear
ReferenceCombine parse_reference_combine(const std::string& s);  // mean | min
std::string to_string(SelectionRule r);
std::string to_string(SelectionScope s);
std::string to_string(Weighting w);
std::string to_string(ReferenceCombine c);

struct SLMOptions {
  double ratio = 0.6;          // fraction of valid tokens kept (hard, stochastic)
  double ratio_end = -1;       // < 0: constant ratio; else linear from ratio to ratio_end over ratio_steps
  int64_t ratio_steps = 0;
  SelectionRule rule = SelectionRule::Excess;
  SelectionScope scope = SelectionScope::MicroBatch;
  Weighting weighting = Weighting::Hard;
  double temperature = 1.0;    // softmax weighting
  double weight_clip = 1.0;    // linear weighting: scores above this (nats) weigh the same
  uint64_t seed = 0;           // random rule, stochastic weighting
  double ratio_at(int64_t step) const;
};

// Soft and sampled weights are normalised to mean 1 over a pool's valid tokens with a finite score, so the loss
// keeps CLM's scale; hard weights are 0/1. For a hard mask weight_sum = kept tokens.
struct SelectionStats {
  int64_t valid = 0, nan_scores = 0;  // nan_scores: valid tokens whose score was NaN (weight 0, counted)
  int64_t dropped = 0;                // valid tokens with a finite score and weight 0
  double weight_sum = 0, weight_sq_sum = 0;
  double kept_score_sum = 0;          // sum(weight * score)
  double dropped_score_sum = 0;
  double kept_score_mean() const;     // weighted mean score of what counts
  double dropped_score_mean() const;
  // Kish's effective sample size over valid tokens, (sum w)^2 / (valid * sum w^2): kept / valid for a hard mask.
  double effective_fraction() const;
  void add(const SelectionStats& o);
};

// The same statistics kept on the scores' device as fp64 sums, so that a training step adds up every selection
// of the step and reads them once, with its loss (no host synchronisation per selection).
class SelectionTally {
 public:
  static constexpr int64_t kFields = 7;  // valid, finite, dropped, weight, weight^2, kept score, dropped score
  static constexpr int64_t kWeight = 3;  // the index of the weight sum (kept tokens, for hard weights)
  // One pool: flat scores (NaN = never weighed), its weights, and its number of valid tokens (int64 scalar tensor).
  void add(const at::Tensor& pool, const at::Tensor& weights, const at::Tensor& num_valid);
  void add(const SelectionTally& other);
  const at::Tensor& sums() const { return sums_; }  // [kFields] fp64 on the device; undefined if nothing added
  // The statistics from sums copied to the host (kFields doubles).
  static SelectionStats stats_of(const double* sums);
  SelectionStats read() const;  // one copy to the host

 private:
  at::Tensor sums_;
};

// The reference loss from several references' losses (each [batch, seq] fp32; NaN propagates).
at::Tensor combine_reference_losses(const std::vector<at::Tensor>& losses, ReferenceCombine how);

class ExcessLossSelector {
 public:
  explicit ExcessLossSelector(SLMOptions options) : opt_(std::move(options)) {}
  // Per-token scores under the rule, fp32, NaN where !valid. `draw` seeds the random rule (e.g. step * 1000 + i).
  at::Tensor score(const at::Tensor& current_loss, const at::Tensor& reference_loss, const at::Tensor& valid,
                   uint64_t draw) const;
  // Weights over the union of the given score tensors (one pool; with scope `sequence`, one pool per row of each
  // tensor): bool masks for hard and stochastic weighting, fp32 for softmax and linear, in the scores' shapes.
  // A valid token whose score is NaN (e.g. a NaN reference loss) always gets weight 0, and is counted. `draw`
  // seeds stochastic sampling.
  std::vector<at::Tensor> select(const std::vector<at::Tensor>& scores, const std::vector<at::Tensor>& valid,
                                 double ratio, uint64_t draw, SelectionStats* stats) const;
  // The same with the statistics added to `tally` on the device. Hard weighting over one pool (scopes
  // micro_batch and step) then runs without any host synchronisation: k is computed and read on the device.
  std::vector<at::Tensor> select(const std::vector<at::Tensor>& scores, const std::vector<at::Tensor>& valid,
                                 double ratio, uint64_t draw, SelectionTally& tally) const;
  // The same over the union of every rank's scores (concatenated in rank order), found without gathering them:
  // hard selection is an exact distributed radix select on the order-preserving keys (4 all-reduces of a 256-bin
  // histogram), ties at the threshold to the lowest (rank, index) first (one all-gather of counts); soft weights
  // need the pool's max and sums (3 small all-reduces). With one process it equals select(). Stats are this
  // rank's part. Stochastic sampling draws per rank: pass a `draw` that differs between ranks.
  std::vector<at::Tensor> select_global(const std::vector<at::Tensor>& scores, const std::vector<at::Tensor>& valid,
                                        double ratio, uint64_t draw, const DistContext& dist,
                                        SelectionStats* stats) const;
  std::vector<at::Tensor> select_global(const std::vector<at::Tensor>& scores, const std::vector<at::Tensor>& valid,
                                        double ratio, uint64_t draw, const DistContext& dist,
                                        SelectionTally& tally) const;
  // What the weights of one selection over `valid` (with these reference losses) will sum to, known before the
  // selection is made: hard and stochastic weighting keep min(ceil(ratio * valid), valid tokens with a finite
  // score), soft weights are normalised to that many finite scores. One pool over the tensors, or one per row with
  // scope sequence; over every rank's tensors (counts summed first) when `dist` is given. Rules excess and
  // reference have a NaN score where the reference loss is NaN; current and random none (a non-finite current
  // loss makes the step's loss non-finite anyway). A double scalar on the tensors' device.
  at::Tensor expected_weight(const std::vector<at::Tensor>& valid, const std::vector<at::Tensor>& reference,
                             double ratio, const DistContext* dist = nullptr) const;
  const SLMOptions& options() const { return opt_; }

 private:
  // What select and select_global do; `tally` null: no statistics are gathered.
  std::vector<at::Tensor> select_into(const std::vector<at::Tensor>& scores, const std::vector<at::Tensor>& valid,
                                      double ratio, uint64_t draw, SelectionTally* tally) const;
  std::vector<at::Tensor> select_global_into(const std::vector<at::Tensor>& scores,
                                             const std::vector<at::Tensor>& valid, double ratio, uint64_t draw,
                                             const DistContext& dist, SelectionTally* tally) const;
  // Selection keys for a flat pool: the scores themselves (hard) or Gumbel-perturbed log-weights (stochastic).
  at::Tensor selection_keys(const at::Tensor& pool, uint64_t draw) const;
  // The weights of one pool (flat scores, NaN = never weighed); across ranks when `dist` is given.
  at::Tensor weigh_pool(const at::Tensor& pool, const at::Tensor& keys, const at::Tensor& num_valid, double ratio,
                        const DistContext* dist) const;
  SLMOptions opt_;
};

// sum(token_loss * weights) / denominator: the SLM loss (and the CLM loss when weights = valid).
at::Tensor masked_loss_sum(const at::Tensor& token_loss, const at::Tensor& weights, double denominator);
// The same with the denominator a scalar tensor on the loss's device (a global token count not read by the host).
// The gradient is the double version's; the loss may differ in its last bit (CUDA multiplies by the reciprocal
// of a host scalar, and divides by a tensor).
at::Tensor masked_loss_sum(const at::Tensor& token_loss, const at::Tensor& weights, const at::Tensor& denominator);

// What is known of one micro-batch before its forward pass.
struct MicroBatchTargets {
  at::Tensor valid;      // [batch, seq] bool: the targets that may count
  at::Tensor reference;  // [batch, seq] fp32 reference losses (NaN: never kept); undefined when the rule needs none
};

// One micro-batch's part of a step's objective.
struct SLMLossOutput {
  at::Tensor loss;     // sum(weight * token loss) / the step's denominator: a differentiable scalar; the sum over
                       // the step's micro-batches (and ranks) is the step's objective
  at::Tensor weights;  // [batch, seq]: a bool mask (hard, stochastic, CLM) or fp32 weights (softmax, linear)
  at::Tensor scores;   // [batch, seq] fp32: the scores selected from (NaN where never weighed); undefined for CLM
};

// One optimizer step of selective (or plain causal) language modeling over `batches` micro-batches, every scope:
//
//   auto step = slm->begin(step_index, {{valid0, ref0}, {valid1, ref1}}, &dist);  // before any forward
//   if (step.needs_scores())                      // scopes step and global: select over every micro-batch first
//     for (i...) { at::NoGradGuard g; step.score(i, model->token_loss(x[i], y[i])); }
//   for (i...) step.loss(i, model->token_loss(x[i], y[i])).loss.backward();
//   SelectionStats stats = step.tally().read();   // the step's statistics (one host read)
//
// Every micro-batch's loss is divided by one denominator known before any forward (torchtitan's convention): the
// step's valid targets over all ranks for CLM, the total weight its selections will have for SLM
// (ExcessLossSelector::expected_weight), so micro-batches count by their tokens and ratio 1 is CLM in every scope.
// Nothing is read back by the host. With a DistContext of several ranks the constructor, and for global scope
// the last score(), are collective.
class SLMStep {
 public:
  // ratio (>= 0): the step's ratio instead of the selector's schedule at `step` (a trainer's own schedule).
  SLMStep(const ExcessLossSelector& selector, int64_t step, std::vector<MicroBatchTargets> batches,
          const DistContext* dist = nullptr, double ratio = -1);
  // Plain causal LM through the same calls: every valid target weighs 1.
  static SLMStep causal(std::vector<at::Tensor> valid, const DistContext* dist = nullptr);

  const at::Tensor& denominator() const { return denominator_; }    // scalar on the device (>= 1)
  const at::Tensor& global_valid() const { return global_valid_; }  // int64 scalar: valid targets, all ranks
  SelectionScope scope() const { return scope_; }  // in effect: step over one micro-batch is micro_batch, etc.
  double ratio() const { return ratio_; }
  bool needs_scores() const;  // call score() for every micro-batch before the first loss()
  // Micro-batch i's current token loss from a no-grad forward; the selection is made when every micro-batch has
  // been scored (collective for global scope).
  void score(int64_t i, const at::Tensor& current_loss);
  // Micro-batch i's loss from its training forward's token loss [batch, seq] fp32.
  SLMLossOutput loss(int64_t i, const at::Tensor& token_loss);
  const SelectionTally& tally() const { return tally_; }  // every selection's statistics so far (empty for CLM)

 private:
  SLMStep() = default;
  const ExcessLossSelector* selector_ = nullptr;  // null: causal
  const DistContext* dist_ = nullptr;
  std::vector<MicroBatchTargets> batches_;
  std::vector<at::Tensor> scores_, weights_;
  SelectionScope scope_ = SelectionScope::MicroBatch;
  double ratio_ = 1;
  uint64_t draw_base_ = 0;
  at::Tensor denominator_, global_valid_;
  SelectionTally tally_;
};

// The module: SLM options and selector, for training loops. begin() is the whole API; forward() is the
// one-micro-batch, one-process shorthand.
struct SLMLossImpl : torch::nn::Module {
  explicit SLMLossImpl(SLMOptions options) : selector(std::move(options)) {}
  SLMStep begin(int64_t step, std::vector<MicroBatchTargets> batches, const DistContext* dist = nullptr) const {
    return SLMStep(selector, step, std::move(batches), dist);
  }
  struct Output {
    at::Tensor loss, weights;
    SelectionStats stats;  // read from the device (one host synchronisation)
  };
  // One micro-batch that is the whole step: token_loss, reference_loss [batch, seq] fp32, valid [batch, seq] bool.
  Output forward(const at::Tensor& token_loss, const at::Tensor& reference_loss, const at::Tensor& valid,
                 int64_t step);
  ExcessLossSelector selector;
};
TORCH_MODULE(SLMLoss);

}  // namespace rho
