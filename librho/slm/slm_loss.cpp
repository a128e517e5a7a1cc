#include "librho/slm/slm_loss.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full_like.h>
#include <ATen/ops/where.h>
#include <fmt/format.h>

#include <cmath>
#include <limits>

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
  throw Error(fmt::format("slm.scope: '{}' is not one of micro_batch, step", s));
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

std::string to_string(SelectionScope s) { return s == SelectionScope::Step ? "step" : "micro_batch"; }

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

std::vector<at::Tensor> ExcessLossSelector::select(const std::vector<at::Tensor>& scores,
                                                   const std::vector<at::Tensor>& valid, double ratio,
                                                   SelectionStats* stats) const {
  if (!(ratio > 0 && ratio <= 1)) throw Error(fmt::format("slm.ratio must lie in (0, 1], got {}", ratio));
  TORCH_CHECK(scores.size() == valid.size(), "select: one validity mask per score tensor");
  std::vector<at::Tensor> flat;
  int64_t num_valid = 0;
  for (size_t i = 0; i < scores.size(); ++i) {
    flat.push_back(scores[i].reshape(-1));
    num_valid += valid[i].sum().item<int64_t>();
  }
  const at::Tensor pool = flat.size() == 1 ? flat[0] : at::cat(flat);
  const int64_t k = static_cast<int64_t>(std::ceil(ratio * static_cast<double>(num_valid) - 1e-9));
  auto [mask, nans] = topk_mask(pool, k);
  if (stats) {
    const at::Tensor finite = pool == pool;
    SelectionStats st;
    st.valid = num_valid;
    st.nan_scores = nans.item<int64_t>() - (pool.numel() - num_valid);
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
