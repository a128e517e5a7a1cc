#include "librho/slm/slm_loss.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full_like.h>
#include <ATen/ops/where.h>
#include <ATen/ops/zeros.h>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "librho/dist/context.h"
#include "librho/kernels/topk_mask.h"
#include "librho/util/error.h"

namespace rho {

SelectionRule parse_selection_rule(const std::string& s) {
  if (s == "excess") return SelectionRule::Excess;
  if (s == "reference") return SelectionRule::Reference;
  if (s == "current") return SelectionRule::Current;
  if (s == "random") return SelectionRule::Random;
  throw Error(fmt::format("slm.rule: '{}' is not one of excess, reference, current, random", s));
}

SelectionScope parse_selection_scope(const std::string& s) {
  if (s == "micro_batch") return SelectionScope::MicroBatch;
  if (s == "step") return SelectionScope::Step;
  if (s == "global") return SelectionScope::Global;
  throw Error(fmt::format("slm.scope: '{}' is not one of micro_batch, step, global", s));
}

std::string to_string(SelectionRule r) {
  switch (r) {
    case SelectionRule::Excess: return "excess";
    case SelectionRule::Reference: return "reference";
    case SelectionRule::Current: return "current";
    case SelectionRule::Random: return "random";
  }
  return "?";
}

std::string to_string(SelectionScope s) {
  switch (s) {
    case SelectionScope::MicroBatch: return "micro_batch";
    case SelectionScope::Step: return "step";
    case SelectionScope::Global: return "global";
  }
  return "?";
}

double SLMOptions::ratio_at(int64_t step) const {
  if (ratio_end < 0 || ratio_steps <= 0) return ratio;
  const double t = std::min(1.0, static_cast<double>(step) / static_cast<double>(ratio_steps));
  return ratio + (ratio_end - ratio) * t;
}

double SelectionStats::kept_score_mean() const {
  return kept ? kept_score_sum / kept : std::numeric_limits<double>::quiet_NaN();
}
double SelectionStats::dropped_score_mean() const {
  const int64_t dropped = valid - kept - nan_scores;
  return dropped > 0 ? dropped_score_sum / dropped : std::numeric_limits<double>::quiet_NaN();
}
void SelectionStats::add(const SelectionStats& o) {
  valid += o.valid;
  kept += o.kept;
  nan_scores += o.nan_scores;
  kept_score_sum += o.kept_score_sum;
  dropped_score_sum += o.dropped_score_sum;
}

at::Tensor ExcessLossSelector::score(const at::Tensor& current_loss, const at::Tensor& reference_loss,
                                     const at::Tensor& valid, uint64_t draw) const {
  at::Tensor s;
  switch (opt_.rule) {
    case SelectionRule::Excess: s = current_loss.detach().to(at::kFloat) - reference_loss.to(at::kFloat); break;
    case SelectionRule::Reference: s = -reference_loss.to(at::kFloat); break;
    case SelectionRule::Current: s = current_loss.detach().to(at::kFloat).clone(); break;
    case SelectionRule::Random: {
      // Drawn on the CPU from (seed, draw) so every device and every resume sees the same subset.
      auto gen = at::make_generator<at::CPUGeneratorImpl>(opt_.seed * 0x9E3779B97F4A7C15ull + draw);
      s = at::empty(current_loss.sizes(), at::kFloat).uniform_(0, 1, gen).to(current_loss.device());
      break;
    }
  }
  return at::where(valid, s, at::full_like(s, std::numeric_limits<float>::quiet_NaN()));
}

namespace {

// The scores as one flat pool and the number of valid tokens in it.
std::pair<at::Tensor, int64_t> flat_pool(const std::vector<at::Tensor>& scores, const std::vector<at::Tensor>& valid,
                                         double ratio) {
  if (!(ratio > 0 && ratio <= 1)) throw Error(fmt::format("slm.ratio must lie in (0, 1], got {}", ratio));
  TORCH_CHECK(scores.size() == valid.size(), "select: one validity mask per score tensor");
  std::vector<at::Tensor> flat;
  int64_t num_valid = 0;
  for (size_t i = 0; i < scores.size(); ++i) {
    flat.push_back(scores[i].reshape(-1));
    num_valid += valid[i].sum().item<int64_t>();
  }
  return {flat.size() == 1 ? flat[0] : at::cat(flat), num_valid};
}

int64_t keep_count(double ratio, int64_t num_valid) {
  return static_cast<int64_t>(std::ceil(ratio * static_cast<double>(num_valid) - 1e-9));
}

// Adds the pool's selection statistics (invalid tokens carry NaN scores) and cuts the mask back into the
// score tensors' shapes.
std::vector<at::Tensor> finish_selection(const std::vector<at::Tensor>& scores, const at::Tensor& pool,
                                         const at::Tensor& mask, int64_t num_valid, int64_t nan_valid,
                                         SelectionStats* stats) {
  if (stats) {
    const at::Tensor finite = pool == pool;
    SelectionStats st;
    st.valid = num_valid;
    st.nan_scores = nan_valid;
    st.kept = mask.sum().item<int64_t>();
    st.kept_score_sum = pool.masked_select(mask).sum().item<double>();
    st.dropped_score_sum = pool.masked_select(finite & ~mask).sum().item<double>();
    stats->add(st);
  }
  std::vector<at::Tensor> out;
  int64_t offset = 0;
  for (const auto& s : scores) {
    out.push_back(mask.narrow(0, offset, s.numel()).view(s.sizes()));
    offset += s.numel();
  }
  return out;
}

}  // namespace

std::vector<at::Tensor> ExcessLossSelector::select(const std::vector<at::Tensor>& scores,
                                                   const std::vector<at::Tensor>& valid, double ratio,
                                                   SelectionStats* stats) const {
  const auto [pool, num_valid] = flat_pool(scores, valid, ratio);
  auto [mask, nans] = topk_mask(pool, keep_count(ratio, num_valid));
  return finish_selection(scores, pool, mask, num_valid, nans.item<int64_t>() - (pool.numel() - num_valid), stats);
}

std::vector<at::Tensor> ExcessLossSelector::select_global(const std::vector<at::Tensor>& scores,
                                                          const std::vector<at::Tensor>& valid, double ratio,
                                                          const DistContext& dist, SelectionStats* stats) const {
  const auto [pool, num_valid] = flat_pool(scores, valid, ratio);
  // Keys on the host: the pool is one step's tokens of one rank (small next to the step's compute).
  const at::Tensor host = pool.to(at::kCPU, at::kFloat).contiguous();
  const float* s = host.data_ptr<float>();
  const int64_t n = host.numel();
  std::vector<uint32_t> keys(static_cast<size_t>(n));
  int64_t finite = 0;
  for (int64_t i = 0; i < n; ++i) finite += (keys[i] = kernels::topk_key(s[i])) != 0;
  auto counts = at::tensor({num_valid, finite}, at::kLong);
  dist.allreduce_sum(counts);
  const int64_t k = std::min(keep_count(ratio, counts[0].item<int64_t>()), counts[1].item<int64_t>());

  // Radix select, one byte per round from the top: after 4 rounds `threshold` is the k-th largest key over all
  // ranks and `remaining` the number of keys equal to it that the selection takes.
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
  // Ties at the threshold: lower ranks first, then lower local index.
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
  return finish_selection(scores, pool, mask.to(pool.device()), num_valid, num_valid - finite, stats);
}

at::Tensor masked_loss_sum(const at::Tensor& token_loss, const at::Tensor& mask, double denominator) {
  return (token_loss * mask.to(token_loss.scalar_type())).sum() / denominator;
}

at::Tensor SLMLossImpl::forward(const at::Tensor& token_loss, const at::Tensor& reference_loss,
                                const at::Tensor& valid, int64_t step) {
  last_stats = SelectionStats{};
  const auto scores = selector.score(token_loss, reference_loss, valid, static_cast<uint64_t>(step));
  const auto mask = selector.select({scores}, {valid}, selector.options().ratio_at(step), &last_stats)[0];
  return masked_loss_sum(token_loss, mask, std::max<int64_t>(last_stats.kept, 1));
}

}  // namespace rho
