#include <ATen/ATen.h>
#include <torch/cuda.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <numeric>
#include <tuple>

#include "helpers.h"
#include "librho/dist/context.h"
#include "librho/kernels/topk_mask.h"
#include "librho/model/llama.h"
#include "librho/slm/slm_loss.h"

namespace {

// The definition, by brute force: sort (score descending, index ascending), NaN excluded, take k.
at::Tensor brute_force_topk(const at::Tensor& scores, int64_t k) {
  auto f = scores.to(at::kFloat).contiguous().view(-1);
  const float* p = f.data_ptr<float>();
  std::vector<int64_t> idx;
  for (int64_t i = 0; i < f.numel(); ++i)
    if (!std::isnan(p[i])) idx.push_back(i);
  std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) { return p[a] > p[b]; });
  auto mask = at::zeros({f.numel()}, at::kBool);
  for (int64_t i = 0; i < std::min<int64_t>(k, idx.size()); ++i) mask[idx[i]] = true;
  return mask.view(scores.sizes());
}

// Random scores with many ties (few distinct values), NaNs, infinities and signed zeros.
at::Tensor tricky_scores(int64_t n, uint64_t seed, at::ScalarType dtype) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto s = at::randint(-20, 20, {n}, gen, at::kFloat) / 4.0;
  auto u = at::rand({n}, gen);
  s = at::where(u < 0.05, at::full_like(s, NAN), s);
  s = at::where((u > 0.05) & (u < 0.06), at::full_like(s, INFINITY), s);
  s = at::where((u > 0.06) & (u < 0.07), at::full_like(s, -INFINITY), s);
  s = at::where((u > 0.07) & (u < 0.08), at::full_like(s, -0.0), s);
  return s.to(dtype);
}

}  // namespace

TEST_CASE("topk_mask equals a brute-force sort, with ties, NaNs and infinities", "[topk]") {
  for (auto dtype : {at::kFloat, at::kBFloat16}) {
    for (uint64_t seed = 0; seed < 6; ++seed) {
      const int64_t n = 1 + seed * 997;
      auto s = tricky_scores(n, seed, dtype);
      const int64_t nans = at::isnan(s.to(at::kFloat)).sum().item<int64_t>();
      for (int64_t k : {int64_t(0), int64_t(1), n / 3, n / 2, n - nans, n, n + 5}) {
        auto [mask, nan_count] = rho::topk_mask(s, k);
        INFO("dtype " << dtype << " n " << n << " k " << k);
        CHECK(nan_count.item<int64_t>() == nans);
        CHECK(mask.sum().item<int64_t>() == std::min(k, n - nans));
        CHECK(at::equal(mask, brute_force_topk(s, k)));
      }
    }
  }
  // Higher-dimensional input keeps its shape; flat index order breaks ties.
  auto s2 = at::ones({3, 4});
  auto [m2, n2] = rho::topk_mask(s2, 5);
  CHECK(m2.sizes() == s2.sizes());
  CHECK(at::equal(m2.view(-1), at::arange(12) < 5));
}

TEST_CASE("topk_mask: -0.0 equals +0.0 (the lower index wins), k may be a tensor, nan_count is a scalar", "[topk]") {
  // Two equal scores and k = 1: the first is kept, whichever sign its zero has.
  for (auto dtype : {at::kFloat, at::kBFloat16}) {
    auto a = at::tensor({-0.0f, 0.0f}).to(dtype), b = at::tensor({0.0f, -0.0f}).to(dtype);
    const auto first = at::tensor({1, 0}).to(at::kBool);
    CHECK(at::equal(rho::topk_mask(a, 1).first, first));
    CHECK(at::equal(rho::topk_mask(b, 1).first, first));
  }
  auto s = tricky_scores(5000, 11, at::kFloat);
  for (int64_t k : {int64_t(0), int64_t(7), int64_t(2500), int64_t(6000)}) {
    auto [m1, n1] = rho::topk_mask(s, k);
    auto [m2, n2] = rho::topk_mask(s, at::scalar_tensor(k, at::kLong));
    CHECK(at::equal(m1, m2));
    CHECK(n1.dim() == 0);
    CHECK(n2.dim() == 0);
    CHECK(n1.item<int64_t>() == n2.item<int64_t>());
  }
}

TEST_CASE("topk_mask on CUDA equals the CPU kernel", "[topk][cuda]") {
  if (!rho::test::cuda_or_skip()) return;
  for (auto dtype : {at::kFloat, at::kBFloat16}) {
    for (int64_t n : {int64_t(1), int64_t(1000), int64_t(4097), int64_t(1) << 20, int64_t(3) << 20}) {
      auto s = tricky_scores(n, n, dtype);
      for (int64_t k : {int64_t(0), int64_t(1), n / 10, (n * 6) / 10, n}) {
        auto [cpu_mask, cpu_nans] = rho::topk_mask(s, k);
        auto [gpu_mask, gpu_nans] = rho::topk_mask(s.to(at::kCUDA), k);
        auto [gpu_mask_k, gpu_nans_k] = rho::topk_mask(s.to(at::kCUDA), at::scalar_tensor(k, at::kLong).cuda());
        INFO("dtype " << dtype << " n " << n << " k " << k);
        CHECK(gpu_nans.dim() == 0);
        CHECK(gpu_nans.item<int64_t>() == cpu_nans.item<int64_t>());
        CHECK(at::equal(gpu_mask.cpu(), cpu_mask));
        CHECK(at::equal(gpu_mask_k.cpu(), cpu_mask));
        CHECK(gpu_nans_k.item<int64_t>() == cpu_nans.item<int64_t>());
      }
    }
  }
}

TEST_CASE("SLM with ratio 1.0 gives CLM's loss and gradients bit for bit", "[slm]") {
  rho::Llama model(rho::test::tiny_llama(61, 32));
  model->reset_parameters(3);
  auto x = at::randint(0, 61, {4, 17});
  auto inputs = x.narrow(1, 0, 16), targets = x.narrow(1, 1, 16);
  auto valid = targets != 0;  // some tokens invalid
  auto ref = at::rand({4, 16}) * 3;

  auto grads = [&](bool slm) {
    model->zero_grad();
    auto tl = model->token_loss(inputs, targets);
    at::Tensor loss;
    if (slm) {
      rho::SLMOptions o;
      o.ratio = 1.0;
      rho::SLMLoss crit(o);
      const auto out = crit->forward(tl, ref, valid, 0);
      loss = out.loss;
      CHECK(out.stats.weight_sum == valid.sum().item<int64_t>());
    } else {
      loss = rho::masked_loss_sum(tl, valid, valid.sum().item<double>());
    }
    loss.backward();
    std::vector<at::Tensor> g{loss.detach().clone()};
    for (auto& p : model->parameters()) g.push_back(p.grad().clone());
    return g;
  };
  auto clm = grads(false), slm = grads(true);
  REQUIRE(clm.size() == slm.size());
  for (size_t i = 0; i < clm.size(); ++i) CHECK(at::equal(clm[i], slm[i]));
}

TEST_CASE("SLM selection: exact semantics of rules, ratio, scope and stats", "[slm]") {
  auto cur = at::tensor({3.0f, 1.0f, 2.0f, 5.0f, 0.5f, 4.0f}).view({2, 3});
  auto ref = at::tensor({1.0f, 0.5f, 0.0f, 4.9f, 0.1f, 1.0f}).view({2, 3});
  auto valid = (at::tensor({1, 1, 1, 1, 1, 0}) == 1).view({2, 3});
  // excess = {2, 0.5, 2, 0.1, 0.4, (3 invalid)}; 5 valid, ratio 0.6 -> keep ceil(3) = 3: indices 0, 2, 1 (0.5)
  rho::SLMOptions o;
  o.ratio = 0.6;
  rho::SLMLoss crit(o);
  const auto out = crit->forward(cur, ref, valid, 0);
  CHECK(out.stats.valid == 5);
  CHECK(out.stats.weight_sum == 3);
  CHECK(out.loss.item<float>() == Approx((3.0 + 1.0 + 2.0) / 3));
  CHECK(at::equal(out.weights, (at::tensor({1, 1, 1, 0, 0, 0}) == 1).view({2, 3})));
  CHECK(out.stats.kept_score_mean() == Approx((2.0 + 0.5 + 2.0) / 3));
  CHECK(out.stats.dropped_score_mean() == Approx((0.1 + 0.4) / 2));

  auto kept = [&](rho::SelectionRule rule, double ratio) {
    rho::SLMOptions r;
    r.rule = rule;
    rho::ExcessLossSelector sel(r);
    return sel.select({sel.score(cur, ref, valid, 0)}, {valid}, ratio, 0, nullptr)[0];
  };
  // reference rule keeps the lowest reference losses: 0.0 (idx 2), 0.1 (idx 4)
  CHECK(at::equal(kept(rho::SelectionRule::Reference, 0.4).view(-1),
                  (at::tensor({0, 0, 1, 0, 1, 0}) == 1)));
  // current rule keeps the highest current losses among valid tokens: 5 (idx 3), 3 (idx 0)
  CHECK(at::equal(kept(rho::SelectionRule::Current, 0.4).view(-1),
                  (at::tensor({1, 0, 0, 1, 0, 0}) == 1)));
  // random: right count, never invalid, reproducible
  auto r1 = kept(rho::SelectionRule::Random, 0.6), r2 = kept(rho::SelectionRule::Random, 0.6);
  CHECK(r1.sum().item<int64_t>() == 3);
  CHECK_FALSE(r1[1][2].item<bool>());
  CHECK(at::equal(r1, r2));

  // Step scope: selection over two micro-batches at once equals selection over their concatenation.
  rho::ExcessLossSelector sel(o);
  auto s1 = sel.score(cur, ref, valid, 0);
  auto both = sel.select({s1, s1 * 2}, {valid, valid}, 0.5, 0, nullptr);
  auto joint = sel.select({at::cat({s1, s1 * 2})}, {at::cat({valid, valid})}, 0.5, 0, nullptr)[0];
  CHECK(at::equal(at::cat(both), joint));

  // NaN reference losses of valid tokens are never kept, and counted.
  auto bad_ref = ref.clone();
  bad_ref[0][0] = NAN;
  rho::SelectionStats st;
  sel.select({sel.score(cur, bad_ref, valid, 0)}, {valid}, 1.0, 0, &st);
  CHECK(st.nan_scores == 1);
  CHECK(st.weight_sum == 4);

  // Ratio schedule: linear from ratio to ratio_end over ratio_steps, then constant.
  rho::SLMOptions sch;
  sch.ratio = 1.0;
  sch.ratio_end = 0.5;
  sch.ratio_steps = 10;
  CHECK(sch.ratio_at(0) == 1.0);
  CHECK(sch.ratio_at(5) == Approx(0.75));
  CHECK(sch.ratio_at(100) == 0.5);
  CHECK_THROWS(sel.select({s1}, {valid}, 0.0, 0, nullptr));
}

namespace {

// Scores [rows, cols] from a seed with about a fifth of the tokens invalid (NaN scores, as score() gives).
std::pair<at::Tensor, at::Tensor> scored_batch(int64_t rows, int64_t cols, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto s = at::randn({rows, cols}, gen);
  auto valid = at::rand({rows, cols}, gen) > 0.2;
  return {at::where(valid, s, at::full_like(s, NAN)), valid};
}

rho::ExcessLossSelector selector_with(rho::Weighting w, rho::SelectionScope scope = rho::SelectionScope::MicroBatch) {
  rho::SLMOptions o;
  o.weighting = w;
  o.scope = scope;
  o.temperature = 0.7;
  o.weight_clip = 0.8;
  o.seed = 11;
  return rho::ExcessLossSelector(o);
}

}  // namespace

TEST_CASE("SLM sequence scope: the top k percent of each row", "[slm]") {
  auto [a, va] = scored_batch(5, 37, 1);
  auto [b, vb] = scored_batch(3, 37, 2);
  auto sel = selector_with(rho::Weighting::Hard, rho::SelectionScope::Sequence);
  rho::SelectionStats st;
  const auto got = sel.select({a, b}, {va, vb}, 0.3, 0, &st);
  int64_t kept = 0;
  for (auto [s, v, m] : {std::tuple{a, va, got[0]}, std::tuple{b, vb, got[1]}})
    for (int64_t r = 0; r < s.size(0); ++r) {
      const int64_t k = static_cast<int64_t>(std::ceil(0.3 * v[r].sum().item<int64_t>() - 1e-9));
      CHECK(at::equal(m[r], brute_force_topk(s[r], k)));
      kept += k;
    }
  CHECK(st.weight_sum == kept);
  CHECK(st.effective_fraction() == Approx(double(kept) / st.valid));
  CHECK(rho::parse_selection_scope("sequence") == rho::SelectionScope::Sequence);
}

TEST_CASE("SLM soft weighting: softmax and clipped linear weights of mean 1", "[slm]") {
  auto [s, valid] = scored_batch(4, 25, 3);
  const auto finite = s == s;
  const double n = finite.sum().item<double>();
  const auto sd = s.to(at::kDouble);
  // softmax: n * exp(s / T) / sum over the finite scores
  auto soft = selector_with(rho::Weighting::Softmax);
  rho::SelectionStats st;
  const auto w = soft.select({s}, {valid}, 0.6, 0, &st)[0];
  const auto e = at::where(finite, at::exp(sd / 0.7), at::zeros_like(sd));
  CHECK(at::allclose(w.to(at::kDouble), e * (n / e.sum()), 1e-5, 1e-6));
  CHECK(st.weight_sum == Approx(n).epsilon(1e-5));
  CHECK(st.dropped == 0);
  CHECK(st.effective_fraction() < 1.0);
  // One process through select_global: the same weights.
  rho::DistContext single(at::Device(at::kCPU));
  CHECK(at::allclose(soft.select_global({s}, {valid}, 0.6, 0, single, nullptr)[0], w, 1e-6, 1e-7));
  // Huge scores do not overflow (the pool's max is subtracted).
  auto big = s * 1e4;
  CHECK(at::isfinite(soft.select({big}, {valid}, 0.6, 0, nullptr)[0]).all().item<bool>());

  // linear: clamp(s, 0, clip), scaled to mean 1; tokens with score <= 0 get 0 and count as dropped.
  auto lin = selector_with(rho::Weighting::Linear);
  rho::SelectionStats ls;
  const auto lw = lin.select({s}, {valid}, 0.6, 0, &ls)[0];
  const auto c = at::where(finite, sd.clamp(0, 0.8), at::zeros_like(sd));
  CHECK(at::allclose(lw.to(at::kDouble), c * (n / c.sum()), 1e-5, 1e-6));
  CHECK(ls.dropped == (finite & (s <= 0)).sum().item<int64_t>());
  // No positive score at all: every valid token weighs 1 (plain CLM).
  const auto flat = lin.select({-s.abs()}, {valid}, 0.6, 0, nullptr)[0];
  CHECK(at::equal(flat, finite.to(at::kFloat)));
  // Sequence scope: each row normalised on its own.
  auto lin_rows = selector_with(rho::Weighting::Linear, rho::SelectionScope::Sequence);
  const auto rw = lin_rows.select({s}, {valid}, 0.6, 0, nullptr)[0];
  for (int64_t r = 0; r < 4; ++r) CHECK(rw[r].sum().item<double>() == Approx(finite[r].sum().item<double>()));
}

TEST_CASE("SLM stochastic selection samples k tokens without replacement, P proportional to the clipped score", "[slm]") {
  auto sel = selector_with(rho::Weighting::Stochastic);
  auto [s, valid] = scored_batch(3, 40, 4);
  const auto finite = s == s;
  const auto m1 = sel.select({s}, {valid}, 0.25, 7, nullptr)[0];
  const int64_t k = static_cast<int64_t>(std::ceil(0.25 * valid.sum().item<int64_t>() - 1e-9));
  CHECK(m1.sum().item<int64_t>() == k);
  CHECK_FALSE((m1 & ~finite).any().item<bool>());
  CHECK_FALSE((m1 & (s <= 0)).any().item<bool>());  // enough positive scores here: none of weight 0 is drawn
  CHECK(at::equal(m1, sel.select({s}, {valid}, 0.25, 7, nullptr)[0]));        // same draw, same sample
  CHECK_FALSE(at::equal(m1, sel.select({s}, {valid}, 0.25, 8, nullptr)[0]));  // another draw, another

  // Inclusion frequencies over many draws against the exact probabilities of drawing 2 of 4 without
  // replacement with weights 1..4 (and a token of weight 0 that is never drawn).
  const auto w = at::tensor({1.0f, 2.0f, 3.0f, 4.0f, -1.0f});
  const auto all = at::ones({5}, at::kBool);
  const std::vector<double> p = {0.1, 0.2, 0.3, 0.4};
  const int draws = 6000;
  std::vector<double> freq(5, 0);
  for (int d = 0; d < draws; ++d) {
    const auto m = sel.select({w}, {all}, 0.4, d, nullptr)[0];  // ceil(0.4 * 5) = 2
    for (int i = 0; i < 5; ++i) freq[i] += m[i].item<bool>();
  }
  CHECK(freq[4] == 0);
  for (int i = 0; i < 4; ++i) {
    double want = p[i];
    for (int j = 0; j < 4; ++j)
      if (j != i) want += p[j] * p[i] / (1 - p[j]);
    const double sd = std::sqrt(want * (1 - want) / draws);
    INFO("token " << i << " frequency " << freq[i] / draws << " want " << want);
    CHECK(std::abs(freq[i] / draws - want) < 5 * sd);
  }
}

TEST_CASE("several references: the mean or the minimum of their losses", "[slm]") {
  const auto a = at::tensor({1.0f, 4.0f, NAN, 2.0f}), b = at::tensor({3.0f, 2.0f, 1.0f, 2.0f});
  const auto mean = rho::combine_reference_losses({a, b}, rho::ReferenceCombine::Mean);
  const auto min = rho::combine_reference_losses({a, b}, rho::ReferenceCombine::Min);
  CHECK(at::equal(mean.narrow(0, 0, 2), at::tensor({2.0f, 3.0f})));
  CHECK(at::equal(min.narrow(0, 0, 2), at::tensor({1.0f, 2.0f})));
  CHECK(std::isnan(mean[2].item<float>()));  // a reference without a loss for a token: no score
  CHECK(std::isnan(min[2].item<float>()));
  CHECK(at::equal(rho::combine_reference_losses({b}, rho::ReferenceCombine::Mean), b));
  CHECK_THROWS_WITH(rho::parse_reference_combine("max"), Catch::Matchers::Contains("mean, min"));
}
