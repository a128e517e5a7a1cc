#include "librho/slm/slm_loss.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/ceil.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/exp.h>
#include <ATen/ops/full_like.h>
#include <ATen/ops/log.h>
#include <ATen/ops/isfinite.h>
#include <ATen/ops/minimum.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/where.h>
#include <ATen/ops/zeros.h>
#include <fmt/format.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <limits>

#include "librho/dist/context.h"
#include "librho/kernels/topk_key.h"
#include "librho/kernels/topk_mask.h"
#include "librho/util/enum_names.h"
#include "librho/util/error.h"

namespace rho {
namespace {

// A name from one of the tables in slm_loss.h, or an error naming the config key and the names it takes.
template <class E, size_t N>
E parse_name(const std::pair<E, const char*> (&table)[N], const char* key, const std::string& s) {
  if (const auto e = enum_from_name(table, s)) return *e;
  throw Error(fmt::format("{}: '{}' is not one of {}", key, s, enum_names(table)));
}

// A CPU generator for (seed, draw, stream): every device and every resume sees the same random numbers.
at::Generator cpu_generator(uint64_t seed, uint64_t draw, uint64_t stream) {
  return at::make_generator<at::CPUGeneratorImpl>(seed * 0x9E3779B97F4A7C15ull + draw + stream * 0xD1B54A32D192ED03ull);
}

int64_t keep_count(double ratio, int64_t num_valid) {
  return static_cast<int64_t>(std::ceil(ratio * static_cast<double>(num_valid) - 1e-9));
}

// The scores as one flat pool and the number of valid tokens in it (an int64 scalar tensor on their device).
std::pair<at::Tensor, at::Tensor> flat_pool(const std::vector<at::Tensor>& scores, const std::vector<at::Tensor>& valid,
                                            double ratio) {
  if (!(ratio > 0 && ratio <= 1)) throw Error(fmt::format("slm.ratio must lie in (0, 1], got {}", ratio));
  TORCH_CHECK(scores.size() == valid.size(), "select: one validity mask per score tensor");
  TORCH_CHECK(!scores.empty(), "select: no scores");
  std::vector<at::Tensor> flat;
  at::Tensor num_valid;
  for (size_t i = 0; i < scores.size(); ++i) {
    flat.push_back(scores[i].reshape(-1).to(at::kFloat));
    const auto n = valid[i].sum();
    num_valid = num_valid.defined() ? num_valid + n : n;
  }
  return {flat.size() == 1 ? flat[0] : at::cat(flat), num_valid};
}

// k = ceil(ratio * num_valid) on the tensor's device, the same double arithmetic as keep_count.
at::Tensor keep_count(double ratio, const at::Tensor& num_valid) {
  return at::ceil(num_valid.to(at::kDouble) * ratio - 1e-9).to(at::kLong);
}

// Cuts a flat pool's weights back into the score tensors' shapes.
std::vector<at::Tensor> split_like(const std::vector<at::Tensor>& scores, const at::Tensor& weights) {
  std::vector<at::Tensor> out;
  int64_t offset = 0;
  for (const auto& s : scores) {
    out.push_back(weights.narrow(0, offset, s.numel()).view(s.sizes()));
    offset += s.numel();
  }
  return out;
}

// Exact top-k over the union of every rank's keys without gathering them: a radix select on the order-preserving
// uint32 keys, one byte per round from the top (4 all-reduces of a 256-bin histogram); ties at the threshold go
// to the lowest (rank, index) first.
at::Tensor radix_select_global(const at::Tensor& keys_pool, int64_t num_valid, double ratio, const DistContext& dist) {
  const at::Tensor host = keys_pool.to(at::kCPU, at::kFloat).contiguous();
  const float* s = host.data_ptr<float>();
  const int64_t n = host.numel();
  std::vector<uint32_t> keys(static_cast<size_t>(n));
  int64_t finite = 0;
  for (int64_t i = 0; i < n; ++i) finite += (keys[i] = kernels::topk_key(s[i])) != 0;
  auto counts = at::tensor({num_valid, finite}, at::kLong);
  dist.allreduce_sum(counts);
  const int64_t k = std::min(keep_count(ratio, counts[0].item<int64_t>()), counts[1].item<int64_t>());

  // After 4 rounds `threshold` is the k-th largest key over all ranks and `remaining` the number of keys equal
  // to it that the selection takes.
  uint32_t threshold = 0, known = 0;
  int64_t remaining = k;
  for (int shift = 24; k > 0 && shift >= 0; shift -= 8) {
    auto hist = at::zeros({256}, at::kLong);
    int64_t* h = hist.data_ptr<int64_t>();
    for (const uint32_t key : keys)
      if (key != 0 && (key & known) == threshold) ++h[(key >> shift) & 0xffu];
    dist.allreduce_sum(hist);
    int digit = 255;
    for (; digit > 0 && h[digit] < remaining; --digit) remaining -= h[digit];
    threshold |= static_cast<uint32_t>(digit) << shift;
    known |= 0xffu << shift;
  }
  int64_t ties = 0;
  if (k > 0)
    for (const uint32_t key : keys) ties += key == threshold;
  const auto all_ties = dist.allgather(k > 0 ? ties : 0);
  int64_t take = remaining;
  for (int64_t r = 0; r < dist.rank(); ++r) take -= all_ties[r];
  take = std::clamp<int64_t>(take, 0, ties);

  auto mask = at::zeros({n}, at::kBool);
  bool* m = mask.data_ptr<bool>();
  for (int64_t i = 0; k > 0 && i < n; ++i) {
    if (keys[i] > threshold) {
      m[i] = true;
    } else if (keys[i] == threshold && take > 0) {
      m[i] = true;
      --take;
    }
  }
  return mask.to(keys_pool.device());
}

// Softmax or clipped-linear weights over the pool's finite scores, normalised to mean 1 over them; across
// ranks when `dist` is given (the max and the two sums are all-reduced).
at::Tensor soft_weights(const at::Tensor& pool, const SLMOptions& opt, const DistContext* dist) {
  const auto finite = pool == pool;
  const auto zeros = at::zeros_like(pool);
  at::Tensor w;
  if (opt.weighting == Weighting::Softmax) {
    // Shift by the pool's max so exp never overflows; +-inf scores are clamped to the float range.
    const auto s = at::where(finite, pool.clamp(-FLT_MAX, FLT_MAX), at::full_like(pool, -FLT_MAX));
    auto local_max = pool.numel() ? s.max().to(at::kDouble).cpu() : at::full({}, -DBL_MAX, at::kDouble);
    double max = local_max.item<double>();
    if (dist) {
      auto all = at::zeros({dist->world_size()}, at::kDouble);
      all[dist->rank()] = max;
      dist->allreduce_sum(all);  // each rank fills its own slot: the sum is everyone's max
      max = all.max().item<double>();
    }
    w = at::where(finite, at::exp((s.to(at::kDouble) - max) / opt.temperature).to(at::kFloat), zeros);
  } else {
    w = at::where(finite, pool.clamp(0, opt.weight_clip), zeros);
  }
  auto sums = at::stack({w.sum().to(at::kDouble), finite.sum().to(at::kDouble)}).cpu();
  if (dist) dist->allreduce_sum(sums);
  const double weight_sum = sums[0].item<double>(), count = sums[1].item<double>();
  // No token with a positive clipped score anywhere in the pool: every finite token counts the same (CLM).
  if (weight_sum <= 0) return finite.to(at::kFloat);
  return w * static_cast<float>(count / weight_sum);
}

}  // namespace

SelectionRule parse_selection_rule(const std::string& s) { return parse_name(kSelectionRuleNames, "slm.rule", s); }
SelectionScope parse_selection_scope(const std::string& s) {
  return parse_name(kSelectionScopeNames, "slm.scope", s);
}
Weighting parse_weighting(const std::string& s) { return parse_name(kWeightingNames, "slm.weighting", s); }
ReferenceCombine parse_reference_combine(const std::string& s) {
  return parse_name(kReferenceCombineNames, "slm.reference_combine", s);
}
std::string to_string(SelectionRule r) { return enum_name(kSelectionRuleNames, r); }
std::string to_string(SelectionScope s) { return enum_name(kSelectionScopeNames, s); }
std::string to_string(Weighting w) { return enum_name(kWeightingNames, w); }
std::string to_string(ReferenceCombine c) { return enum_name(kReferenceCombineNames, c); }

double SLMOptions::ratio_at(int64_t step) const {
  if (ratio_end < 0 || ratio_steps <= 0) return ratio;
  const double t = std::min(1.0, static_cast<double>(step) / static_cast<double>(ratio_steps));
  return ratio + (ratio_end - ratio) * t;
}

double SelectionStats::kept_score_mean() const {
  return weight_sum > 0 ? kept_score_sum / weight_sum : std::numeric_limits<double>::quiet_NaN();
}
double SelectionStats::dropped_score_mean() const {
  return dropped > 0 ? dropped_score_sum / dropped : std::numeric_limits<double>::quiet_NaN();
}
double SelectionStats::effective_fraction() const {
  return valid > 0 && weight_sq_sum > 0 ? weight_sum * weight_sum / (static_cast<double>(valid) * weight_sq_sum) : 0;
}
void SelectionStats::add(const SelectionStats& o) {
  valid += o.valid;
  nan_scores += o.nan_scores;
  dropped += o.dropped;
  weight_sum += o.weight_sum;
  weight_sq_sum += o.weight_sq_sum;
  kept_score_sum += o.kept_score_sum;
  dropped_score_sum += o.dropped_score_sum;
}

at::Tensor combine_reference_losses(const std::vector<at::Tensor>& losses, ReferenceCombine how) {
  if (losses.empty()) throw Error("combine_reference_losses: no reference losses");
  at::Tensor out = losses[0].to(at::kFloat);
  for (size_t i = 1; i < losses.size(); ++i)
    out = how == ReferenceCombine::Min ? at::minimum(out, losses[i].to(at::kFloat)) : out + losses[i].to(at::kFloat);
  return how == ReferenceCombine::Mean && losses.size() > 1 ? out / static_cast<double>(losses.size()) : out;
}

at::Tensor ExcessLossSelector::score(const at::Tensor& current_loss, const at::Tensor& reference_loss,
                                     const at::Tensor& valid, uint64_t draw) const {
  at::Tensor s;
  switch (opt_.rule) {
    case SelectionRule::Excess: s = current_loss.detach().to(at::kFloat) - reference_loss.to(at::kFloat); break;
    case SelectionRule::Reference: s = -reference_loss.to(at::kFloat); break;
    case SelectionRule::Current: s = current_loss.detach().to(at::kFloat).clone(); break;
    case SelectionRule::Random: {
      auto gen = cpu_generator(opt_.seed, draw, 0);
      s = at::empty(current_loss.sizes(), at::kFloat).uniform_(0, 1, gen).to(current_loss.device());
      break;
    }
  }
  return at::where(valid, s, at::full_like(s, std::numeric_limits<float>::quiet_NaN()));
}

at::Tensor ExcessLossSelector::expected_weight(const std::vector<at::Tensor>& valid,
                                               const std::vector<at::Tensor>& reference, double ratio,
                                               const DistContext* dist) const {
  TORCH_CHECK(!valid.empty() && valid.size() == reference.size(), "expected_weight: one reference per mask");
  const bool nan_where_reference_is = opt_.rule == SelectionRule::Excess || opt_.rule == SelectionRule::Reference;
  const bool soft = opt_.weighting == Weighting::Softmax || opt_.weighting == Weighting::Linear;
  // weight of pools with `n` valid tokens of which `f` have a finite score (int64 tensors of the same shape)
  auto weight = [&](const at::Tensor& n, const at::Tensor& f) {
    return (soft ? f : at::minimum(keep_count(ratio, n), f)).to(at::kDouble).sum();
  };
  std::vector<at::Tensor> n, f;
  for (size_t i = 0; i < valid.size(); ++i) {
    const auto finite = nan_where_reference_is ? valid[i] & at::isfinite(reference[i]) : valid[i];
    const int64_t T = valid[i].dim() ? valid[i].size(-1) : 1;
    if (opt_.scope == SelectionScope::Sequence && !dist) {  // one pool per row
      n.push_back(valid[i].reshape({-1, T}).sum(1));
      f.push_back(finite.reshape({-1, T}).sum(1));
    } else {
      n.push_back(valid[i].sum().view(1));
      f.push_back(finite.sum().view(1));
    }
  }
  if (opt_.scope == SelectionScope::Sequence && !dist) return weight(at::cat(n), at::cat(f));
  auto counts = at::stack({at::cat(n).sum(), at::cat(f).sum()});
  if (dist) dist->allreduce_sum(counts);
  return weight(counts[0], counts[1]);
}

at::Tensor ExcessLossSelector::selection_keys(const at::Tensor& pool, uint64_t draw) const {
  if (opt_.weighting != Weighting::Stochastic) return pool;
  // Gumbel top-k: the k largest log(w) + Gumbel noise are k draws without replacement with P proportional to w.
  // w = 0 gives -inf (chosen only when fewer than k tokens have w > 0); NaN stays NaN (never chosen).
  auto gen = cpu_generator(opt_.seed, draw, 1);
  const auto u = at::empty({pool.numel()}, at::kDouble).uniform_(DBL_MIN, 1, gen);
  const auto gumbel = -at::log(-at::log(u));
  return (at::log(pool.clamp_min(0).to(at::kDouble).cpu()) + gumbel).to(at::kFloat).to(pool.device());
}

at::Tensor ExcessLossSelector::weigh_pool(const at::Tensor& pool, const at::Tensor& keys, const at::Tensor& num_valid,
                                          double ratio, const DistContext* dist) const {
  switch (opt_.weighting) {
    case Weighting::Hard:
    case Weighting::Stochastic:
      return dist ? radix_select_global(keys, num_valid.item<int64_t>(), ratio, *dist)
                  : topk_mask(keys, keep_count(ratio, num_valid)).first.view(-1);
    case Weighting::Softmax:
    case Weighting::Linear: return soft_weights(pool, opt_, dist);
  }
  return {};
}

std::vector<at::Tensor> ExcessLossSelector::select(const std::vector<at::Tensor>& scores,
                                                   const std::vector<at::Tensor>& valid, double ratio, uint64_t draw,
                                                   SelectionStats* stats) const {
  SelectionTally tally;
  auto weights = select_into(scores, valid, ratio, draw, stats ? &tally : nullptr);
  if (stats) stats->add(tally.read());
  return weights;
}

std::vector<at::Tensor> ExcessLossSelector::select(const std::vector<at::Tensor>& scores,
                                                   const std::vector<at::Tensor>& valid, double ratio, uint64_t draw,
                                                   SelectionTally& tally) const {
  return select_into(scores, valid, ratio, draw, &tally);
}

std::vector<at::Tensor> ExcessLossSelector::select_into(const std::vector<at::Tensor>& scores,
                                                        const std::vector<at::Tensor>& valid, double ratio,
                                                        uint64_t draw, SelectionTally* tally) const {
  const auto [pool, num_valid] = flat_pool(scores, valid, ratio);
  const auto keys = selection_keys(pool, draw);
  at::Tensor weights;
  if (opt_.scope == SelectionScope::Sequence) {
    // One pool per row (the last dimension is the sequence).
    std::vector<at::Tensor> rows;
    int64_t offset = 0;
    for (size_t i = 0; i < scores.size(); ++i) {
      const int64_t T = scores[i].dim() ? scores[i].size(-1) : 1;
      const auto row_valid = valid[i].reshape({-1, T}).sum(1);
      for (int64_t r = 0; r < row_valid.size(0); ++r, offset += T)
        rows.push_back(weigh_pool(pool.narrow(0, offset, T), keys.narrow(0, offset, T), row_valid[r], ratio, nullptr));
    }
    weights = rows.empty() ? pool.to(at::kBool) : at::cat(rows);
  } else {
    weights = weigh_pool(pool, keys, num_valid, ratio, nullptr);
  }
  if (tally) tally->add(pool, weights, num_valid);
  return split_like(scores, weights);
}

std::vector<at::Tensor> ExcessLossSelector::select_global(const std::vector<at::Tensor>& scores,
                                                          const std::vector<at::Tensor>& valid, double ratio,
                                                          uint64_t draw, const DistContext& dist,
                                                          SelectionStats* stats) const {
  SelectionTally tally;
  auto weights = select_global_into(scores, valid, ratio, draw, dist, stats ? &tally : nullptr);
  if (stats) stats->add(tally.read());
  return weights;
}

std::vector<at::Tensor> ExcessLossSelector::select_global(const std::vector<at::Tensor>& scores,
                                                          const std::vector<at::Tensor>& valid, double ratio,
                                                          uint64_t draw, const DistContext& dist,
                                                          SelectionTally& tally) const {
  return select_global_into(scores, valid, ratio, draw, dist, &tally);
}

std::vector<at::Tensor> ExcessLossSelector::select_global_into(const std::vector<at::Tensor>& scores,
                                                               const std::vector<at::Tensor>& valid, double ratio,
                                                               uint64_t draw, const DistContext& dist,
                                                               SelectionTally* tally) const {
  const auto [pool, num_valid] = flat_pool(scores, valid, ratio);
  const auto weights = weigh_pool(pool, selection_keys(pool, draw), num_valid, ratio, &dist);
  if (tally) tally->add(pool, weights, num_valid);
  return split_like(scores, weights);
}

at::Tensor masked_loss_sum(const at::Tensor& token_loss, const at::Tensor& weights, double denominator) {
  return (token_loss * weights.to(token_loss.scalar_type())).sum() / denominator;
}

at::Tensor masked_loss_sum(const at::Tensor& token_loss, const at::Tensor& weights, const at::Tensor& denominator) {
  // Divided in the loss's dtype, as a double scalar is (opmath of a float tensor is float).
  return (token_loss * weights.to(token_loss.scalar_type())).sum() / denominator.to(token_loss.scalar_type());
}

void SelectionTally::add(const at::Tensor& pool, const at::Tensor& weights, const at::Tensor& num_valid) {
  const auto finite = pool == pool;
  const auto w = weights.to(at::kFloat);
  const auto score = at::where(finite, pool, at::zeros_like(pool));
  const auto zero = finite & (w == 0);
  const auto sums = at::stack({num_valid.to(at::kDouble), finite.sum().to(at::kDouble), zero.sum().to(at::kDouble),
                               w.sum().to(at::kDouble), (w * w).sum().to(at::kDouble),
                               at::where(w > 0, w * score, at::zeros_like(w)).sum().to(at::kDouble),
                               at::where(zero, score, at::zeros_like(score)).sum().to(at::kDouble)});
  sums_ = sums_.defined() ? sums_ + sums : sums;
}

void SelectionTally::add(const SelectionTally& other) {
  if (other.sums_.defined()) sums_ = sums_.defined() ? sums_ + other.sums_ : other.sums_;
}

SelectionStats SelectionTally::stats_of(const double* v) {
  SelectionStats st;
  st.valid = static_cast<int64_t>(v[0]);
  st.nan_scores = st.valid - static_cast<int64_t>(v[1]);
  st.dropped = static_cast<int64_t>(v[2]);
  st.weight_sum = v[3];
  st.weight_sq_sum = v[4];
  st.kept_score_sum = v[5];
  st.dropped_score_sum = v[6];
  return st;
}

SelectionStats SelectionTally::read() const {
  if (!sums_.defined()) return {};
  const auto host = sums_.to(at::kCPU).contiguous();
  return stats_of(host.data_ptr<double>());
}

namespace {
// The scope a selection really needs: one micro-batch per step makes the step the micro-batch, and one process
// makes the global batch the step (the same pool, the same top-k), so no extra forward pass is run for them. The
// scores then come from the training forward instead of a no-grad one: equal but for the last bit of the
// log-softmax, which can flip a choice between tokens tied at the threshold.
SelectionScope effective_scope(SelectionScope scope, int64_t accum, int64_t world) {
  if (scope == SelectionScope::Global && world == 1) scope = SelectionScope::Step;
  if (scope == SelectionScope::Step && accum == 1) scope = SelectionScope::MicroBatch;
  return scope;
}

bool per_micro_batch(SelectionScope scope) {
  return scope == SelectionScope::MicroBatch || scope == SelectionScope::Sequence;
}

// The step's valid targets over all ranks (int64 scalar on the device).
at::Tensor count_valid(const std::vector<at::Tensor>& valid, const DistContext* dist) {
  TORCH_CHECK(!valid.empty(), "an SLM step needs at least one micro-batch");
  at::Tensor n;
  for (const auto& v : valid) n = n.defined() ? n + v.sum() : v.sum();
  if (dist) dist->allreduce_sum(n);
  return n;
}
}  // namespace

SLMStep SLMStep::causal(std::vector<at::Tensor> valid, const DistContext* dist) {
  SLMStep s;
  s.dist_ = dist;
  s.global_valid_ = count_valid(valid, dist);
  s.denominator_ = s.global_valid_.clamp_min(1);
  for (auto& v : valid) s.batches_.push_back({std::move(v), at::Tensor()});
  return s;
}

SLMStep::SLMStep(const ExcessLossSelector& selector, int64_t step, std::vector<MicroBatchTargets> batches,
                 const DistContext* dist, double ratio)
    : selector_(&selector), dist_(dist), batches_(std::move(batches)) {
  const int64_t accum = static_cast<int64_t>(batches_.size());
  const int64_t world = dist ? dist->world_size() : 1, rank = dist ? dist->rank() : 0;
  scope_ = effective_scope(selector.options().scope, accum, world);
  ratio_ = ratio >= 0 ? ratio : selector.options().ratio_at(step);
  // Random draws differ per step, micro-batch and rank (one process: step * accum + i).
  draw_base_ = (static_cast<uint64_t>(step) * world + rank) * static_cast<uint64_t>(accum);
  std::vector<at::Tensor> valid, ref;
  for (auto& b : batches_) {
    if (!b.reference.defined()) b.reference = at::zeros(b.valid.sizes(), b.valid.options().dtype(at::kFloat));
    valid.push_back(b.valid);
    ref.push_back(b.reference);
  }
  global_valid_ = count_valid(valid, dist);
  // The weight the step's selections will have over all ranks, before they are made: per micro-batch (scopes
  // micro_batch and sequence), over this rank's micro-batches (step), or over every rank's (global).
  at::Tensor w;
  if (scope_ == SelectionScope::Global) {
    w = selector.expected_weight(valid, ref, ratio_, dist);
  } else {
    if (scope_ == SelectionScope::Step) {
      w = selector.expected_weight(valid, ref, ratio_);
    } else {
      for (int64_t i = 0; i < accum; ++i) {
        const auto wi = selector.expected_weight({valid[i]}, {ref[i]}, ratio_);
        w = w.defined() ? w + wi : wi;
      }
    }
    if (dist) dist->allreduce_sum(w);
  }
  denominator_ = w.clamp_min(1);
  scores_.resize(batches_.size());
}

bool SLMStep::needs_scores() const { return selector_ && !per_micro_batch(scope_); }

void SLMStep::score(int64_t i, const at::Tensor& current_loss) {
  TORCH_CHECK(needs_scores(), "SLMStep::score: scope ", to_string(scope_), " selects inside each micro-batch's loss()");
  TORCH_CHECK(weights_.empty(), "SLMStep::score: the step's selection is already made");
  auto& b = batches_.at(i);
  scores_[i] = selector_->score(current_loss, b.reference, b.valid, draw_base_ + i);
  for (const auto& sc : scores_)
    if (!sc.defined()) return;
  std::vector<at::Tensor> valid;
  for (const auto& mb : batches_) valid.push_back(mb.valid);
  weights_ = scope_ == SelectionScope::Global
                 ? selector_->select_global(scores_, valid, ratio_, draw_base_, *dist_, tally_)
                 : selector_->select(scores_, valid, ratio_, draw_base_, tally_);
}

SLMLossOutput SLMStep::loss(int64_t i, const at::Tensor& token_loss) {
  const auto& b = batches_.at(i);
  at::Tensor w, scores;
  if (!selector_) {
    w = b.valid;
  } else if (per_micro_batch(scope_)) {
    const uint64_t draw = draw_base_ + i;
    scores = selector_->score(token_loss, b.reference, b.valid, draw);
    w = selector_->select({scores}, {b.valid}, ratio_, draw, tally_)[0];
  } else {
    TORCH_CHECK(!weights_.empty(), "SLMStep::loss: scope ", to_string(scope_),
                " selects over the whole step: score() every micro-batch first");
    w = weights_[i];
    scores = scores_[i];
  }
  return {masked_loss_sum(token_loss, w, denominator_), w, scores};
}

SLMLossImpl::Output SLMLossImpl::forward(const at::Tensor& token_loss, const at::Tensor& reference_loss,
                                         const at::Tensor& valid, int64_t step) {
  auto s = begin(step, {{valid, reference_loss}});
  auto out = s.loss(0, token_loss);
  return {out.loss, out.weights, s.tally().read()};
}

}  // namespace rho
