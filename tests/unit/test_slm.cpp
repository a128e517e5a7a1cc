#include <ATen/ATen.h>
#include <torch/cuda.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <numeric>

#include "helpers.h"
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

TEST_CASE("topk_mask on CUDA equals the CPU kernel", "[topk][cuda]") {
  if (!rho::test::cuda_or_skip()) return;
  for (auto dtype : {at::kFloat, at::kBFloat16}) {
    for (int64_t n : {int64_t(1), int64_t(1000), int64_t(4097), int64_t(1) << 20, int64_t(3) << 20}) {
      auto s = tricky_scores(n, n, dtype);
      for (int64_t k : {int64_t(0), int64_t(1), n / 10, (n * 6) / 10, n}) {
        auto [cpu_mask, cpu_nans] = rho::topk_mask(s, k);
        auto [gpu_mask, gpu_nans] = rho::topk_mask(s.to(at::kCUDA), k);
        INFO("dtype " << dtype << " n " << n << " k " << k);
        CHECK(gpu_nans.item<int64_t>() == cpu_nans.item<int64_t>());
        CHECK(at::equal(gpu_mask.cpu(), cpu_mask));
      }
    }
  }
}

TEST_CASE("SLM with ratio 1.0 gives CLM's loss and gradients bit for bit", "[slm]") {
  rho::LlamaConfig c;
  c.vocab_size = 61;
  c.hidden_size = 32;
  c.intermediate_size = 64;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.max_position_embeddings = 32;
  rho::Llama model(c);
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
      loss = crit->forward(tl, ref, valid, 0);
      CHECK(crit->last_stats.kept == valid.sum().item<int64_t>());
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
  auto loss = crit->forward(cur, ref, valid, 0);
  CHECK(crit->last_stats.valid == 5);
  CHECK(crit->last_stats.kept == 3);
  CHECK(loss.item<float>() == Approx((3.0 + 1.0 + 2.0) / 3));
  CHECK(crit->last_stats.kept_score_mean() == Approx((2.0 + 0.5 + 2.0) / 3));
  CHECK(crit->last_stats.dropped_score_mean() == Approx((0.1 + 0.4) / 2));

  auto kept = [&](rho::SelectionRule rule, double ratio) {
    rho::SLMOptions r;
    r.rule = rule;
    rho::ExcessLossSelector sel(r);
    return sel.select({sel.score(cur, ref, valid, 0)}, {valid}, ratio, nullptr)[0];
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
  auto both = sel.select({s1, s1 * 2}, {valid, valid}, 0.5, nullptr);
  auto joint = sel.select({at::cat({s1, s1 * 2})}, {at::cat({valid, valid})}, 0.5, nullptr)[0];
  CHECK(at::equal(at::cat(both), joint));

  // NaN reference losses of valid tokens are never kept, and counted.
  auto bad_ref = ref.clone();
  bad_ref[0][0] = NAN;
  rho::SelectionStats st;
  sel.select({sel.score(cur, bad_ref, valid, 0)}, {valid}, 1.0, &st);
  CHECK(st.nan_scores == 1);
  CHECK(st.kept == 4);

  // Ratio schedule: linear from ratio to ratio_end over ratio_steps, then constant.
  rho::SLMOptions sch;
  sch.ratio = 1.0;
  sch.ratio_end = 0.5;
  sch.ratio_steps = 10;
  CHECK(sch.ratio_at(0) == 1.0);
  CHECK(sch.ratio_at(5) == Approx(0.75));
  CHECK(sch.ratio_at(100) == 0.5);
  CHECK_THROWS(sel.select({s1}, {valid}, 0.0, nullptr));
}
