// linear_cross_entropy (the LM head's fused, chunked loss with its own backward) against the naive
// linear -> cross_entropy through autograd: values and gradients, chunk sizes, ignored rows, tied embeddings.
#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>

#include <catch2/catch.hpp>

#include "helpers.h"
#include "librho/model/autocast.h"
#include "librho/model/linear_cross_entropy.h"
#include "librho/model/llama.h"

namespace {

struct Result {
  at::Tensor loss, grad_hidden, grad_weight;
};

// Loss and the gradients of sum(loss * upstream), by the fused op (rows > 0) or the naive path (rows == 0).
Result run(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& targets, const at::Tensor& upstream,
           int64_t rows) {
  auto h = hidden.detach().clone().requires_grad_(true);
  auto w = weight.detach().clone().requires_grad_(true);
  auto loss = rows > 0 ? rho::linear_cross_entropy(h, w, targets, rows)
                       : at::cross_entropy_loss(at::linear(h, w), targets, {}, at::Reduction::None, -100);
  (loss * upstream).sum().backward();
  return {loss.detach(), h.grad(), w.grad()};
}

struct Case {
  at::Tensor hidden, weight, targets, upstream;
};

Case make_case(int64_t n, int64_t h, int64_t v, at::ScalarType dtype, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  Case c;
  c.hidden = at::randn({n, h}, gen, at::kDouble).to(dtype);
  c.weight = (at::randn({v, h}, gen, at::kDouble) * 0.5).to(dtype);
  c.targets = at::randint(0, v, {n}, gen, at::kLong);
  c.targets.index_put_({at::arange(0, n, 3)}, -100);  // every third row ignored
  c.upstream = at::rand({n}, gen, at::kDouble).to(dtype);
  return c;
}

// Under bf16 autocast the fused loss and gradients are as close to the fp64 values (relative norm error) as the
// autocast naive path's: bf16 operands put both between 1e-3 and 1e-2.
void check_close_to_exact(const Result& fused, const Result& naive, const Result& exact) {
  auto err = [](const at::Tensor& a, const at::Tensor& ref) {
    return ((a.cpu().to(at::kDouble) - ref).norm() / ref.norm()).item<double>();
  };
  const std::pair<at::Tensor, at::Tensor> pairs[] = {
      {fused.loss, naive.loss}, {fused.grad_hidden, naive.grad_hidden}, {fused.grad_weight, naive.grad_weight}};
  const at::Tensor refs[] = {exact.loss, exact.grad_hidden, exact.grad_weight};
  for (int i = 0; i < 3; ++i) {
    const double e_fused = err(pairs[i].first, refs[i]), e_naive = err(pairs[i].second, refs[i]);
    INFO("output " << i << " (loss, grad hidden, grad weight): relative error against fp64, fused " << e_fused
                   << ", autocast linear " << e_naive);
    CHECK(e_fused < 1e-2);
    CHECK(e_fused < 2 * e_naive + 1e-4);
  }
}

}  // namespace

TEST_CASE("linear_cross_entropy equals linear then cross_entropy: values and gradients", "[linear_ce]") {
  for (auto dtype : {at::kDouble, at::kFloat}) {
    const double tol = dtype == at::kDouble ? 1e-12 : 2e-6;
    const auto c = make_case(37, 16, 53, dtype, 3);
    const auto naive = run(c.hidden, c.weight, c.targets, c.upstream, 0);
    for (int64_t rows : {1, 5, 36, 37, 4096}) {  // chunk sizes that do and do not divide N
      INFO("dtype " << dtype << ", rows_per_chunk " << rows);
      const auto fused = run(c.hidden, c.weight, c.targets, c.upstream, rows);
      CHECK(fused.loss.scalar_type() == dtype);
      CHECK(at::allclose(fused.loss, naive.loss, tol, tol));
      CHECK(at::allclose(fused.grad_hidden, naive.grad_hidden, tol, tol));
      CHECK(at::allclose(fused.grad_weight, naive.grad_weight, tol, tol));
    }
  }
}

TEST_CASE("linear_cross_entropy in bf16 is close to fp32 on the same inputs, confident rows included", "[linear_ce]") {
  auto c = make_case(64, 32, 300, at::kFloat, 6);
  c.targets.fill_(7);
  c.hidden[1] = c.weight[7] * 2;  // row 1 predicts its target with p about 0.998: softmax - 1 nearly cancels
  const auto h = c.hidden.to(at::kBFloat16), w = c.weight.to(at::kBFloat16);
  const auto fused = run(h, w, c.targets, c.upstream, 7);
  const auto ref = run(h.to(at::kFloat), w.to(at::kFloat), c.targets, c.upstream, 0);
  REQUIRE(fused.grad_hidden.scalar_type() == at::kBFloat16);
  REQUIRE(ref.loss[1].item<double>() < 1e-2);
  CHECK(at::allclose(fused.loss, ref.loss, 1e-2, 1e-2));
  // bf16 GEMMs: errors relative to the gradient's scale, not elementwise.
  const auto rel = [](const at::Tensor& x, const at::Tensor& ref) {
    return ((x.to(at::kDouble) - ref.to(at::kDouble)).norm() / ref.to(at::kDouble).norm()).item<double>();
  };
  CHECK(rel(fused.grad_hidden, ref.grad_hidden) < 1e-2);
  CHECK(rel(fused.grad_weight, ref.grad_weight) < 1e-2);
  // The confident row's gradient is tiny; with softmax - 1 taken in bf16 it would be mostly rounding error.
  CHECK(rel(fused.grad_hidden[1], ref.grad_hidden[1]) < 0.1);
}

TEST_CASE("linear_cross_entropy: ignored rows have zero loss and zero gradient", "[linear_ce]") {
  const auto c = make_case(20, 8, 11, at::kDouble, 5);
  const auto fused = run(c.hidden, c.weight, c.targets, c.upstream, 6);
  const auto ignored = c.targets.eq(-100);
  REQUIRE(ignored.any().item<bool>());
  CHECK(fused.loss.masked_select(ignored).abs().max().item<double>() == 0.0);
  CHECK(fused.grad_hidden.index({ignored}).abs().max().item<double>() == 0.0);
  CHECK(fused.loss.masked_select(ignored.logical_not()).min().item<double>() > 0.0);
  // All rows ignored: no gradient at all reaches the weight.
  const auto none = run(c.hidden, c.weight, at::full({20}, -100, at::kLong), c.upstream, 6);
  CHECK(none.grad_weight.abs().max().item<double>() == 0.0);
}

TEST_CASE("linear_cross_entropy: gradient to one input only, and shape errors", "[linear_ce]") {
  const auto c = make_case(9, 4, 7, at::kDouble, 8);
  const auto naive = run(c.hidden, c.weight, c.targets, c.upstream, 0);
  auto w = c.weight.clone().requires_grad_(true);
  (rho::linear_cross_entropy(c.hidden, w, c.targets, 4) * c.upstream).sum().backward();
  CHECK(at::allclose(w.grad(), naive.grad_weight, 1e-12, 1e-12));
  auto h = c.hidden.clone().requires_grad_(true);
  (rho::linear_cross_entropy(h, c.weight, c.targets, 4) * c.upstream).sum().backward();
  CHECK(at::allclose(h.grad(), naive.grad_hidden, 1e-12, 1e-12));
  CHECK_THROWS(rho::linear_cross_entropy(c.hidden, c.weight.t(), c.targets));
  CHECK_THROWS(rho::linear_cross_entropy(c.hidden, c.weight, c.targets.narrow(0, 0, 8)));
}

namespace {
// Every parameter's gradient of a weighted sum of token losses: the model's token_loss (fused in grad mode)
// or full logits then cross-entropy.
std::vector<at::Tensor> model_grads(bool tied, bool fused) {
  auto config = rho::LlamaConfig::from_yaml_file(rho::test::source_path("configs/model/tiny.yaml"));
  config.tie_word_embeddings = tied;
  const int64_t v = config.vocab_size;
  rho::Llama m(config);
  m->reset_parameters(21);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(2);
  const auto x = at::randint(0, v, {3, 11}, gen, at::kLong), y = at::randint(0, v, {3, 11}, gen, at::kLong);
  const auto weights = at::rand({3, 11}, gen);
  const auto loss = fused ? m->token_loss(x, y, 7)
                          : at::cross_entropy_loss(m->forward(x).reshape({-1, v}), y.reshape({-1}), {},
                                                   at::Reduction::None)
                                .view({3, 11});
  (loss * weights).sum().backward();
  std::vector<at::Tensor> g{loss.detach()};
  for (auto& p : m->parameters()) g.push_back(p.grad().clone());
  return g;
}
}  // namespace

TEST_CASE("Llama token_loss backward equals the full-logits backward, tied and untied", "[linear_ce][model]") {
  for (bool tied : {true, false}) {
    INFO("tied " << tied);
    const auto fused = model_grads(tied, true), naive = model_grads(tied, false);
    REQUIRE(fused.size() == naive.size());
    for (size_t i = 0; i < fused.size(); ++i) {
      INFO("tensor " << i);
      CHECK(at::allclose(fused[i], naive[i], 1e-5, 1e-6));
    }
  }
}

TEST_CASE("linear_cross_entropy on CUDA: fp32 equals CPU, bf16 autocast close to autocast linear", "[linear_ce][cuda]") {
  if (!rho::test::cuda_or_skip()) return;
  const auto c = make_case(300, 64, 1000, at::kFloat, 4);
  const auto cpu = run(c.hidden, c.weight, c.targets, c.upstream, 128);
  const auto gpu = run(c.hidden.cuda(), c.weight.cuda(), c.targets.cuda(), c.upstream.cuda(), 128);
  CHECK(at::allclose(gpu.loss.cpu(), cpu.loss, 1e-4, 1e-4));
  CHECK(at::allclose(gpu.grad_hidden.cpu(), cpu.grad_hidden, 1e-4, 1e-5));
  CHECK(at::allclose(gpu.grad_weight.cpu(), cpu.grad_weight, 1e-4, 1e-5));
  // Under bf16 autocast: gradients arrive in the inputs' dtype (fp32), as close to the fp64 values as the autocast
  // naive path's (elementwise the two differ by bf16 rounding, up to 0.008 on gradients of size 2: compared
  // against fp64 by relative norm error instead).
  const auto exact = run(c.hidden.to(at::kDouble), c.weight.to(at::kDouble), c.targets, c.upstream.to(at::kDouble), 0);
  Result fused, naive;
  {
    const rho::AutocastScope ac(at::kCUDA, at::kBFloat16);
    fused = run(c.hidden.cuda(), c.weight.cuda(), c.targets.cuda(), c.upstream.cuda(), 128);
    auto h = c.hidden.cuda().requires_grad_(true), w = c.weight.cuda().requires_grad_(true);
    auto loss = at::cross_entropy_loss(at::linear(h, w).to(at::kFloat), c.targets.cuda(), {}, at::Reduction::None, -100);
    (loss * c.upstream.cuda()).sum().backward();
    naive = {loss.detach(), h.grad(), w.grad()};
  }
  CHECK(fused.loss.scalar_type() == at::kFloat);
  CHECK(fused.grad_weight.scalar_type() == at::kFloat);
  check_close_to_exact(fused, naive, exact);
}

TEST_CASE("linear_cross_entropy under CPU bf16 autocast: as close to fp64 as autocast linear is (the CUDA test's twin)",
          "[linear_ce][autocast]") {
  const auto c = make_case(300, 64, 1000, at::kFloat, 4);
  const auto exact = run(c.hidden.to(at::kDouble), c.weight.to(at::kDouble), c.targets, c.upstream.to(at::kDouble), 0);
  Result fused, naive;
  {
    const rho::AutocastScope ac(at::kCPU, at::kBFloat16);
    fused = run(c.hidden, c.weight, c.targets, c.upstream, 128);
    auto h = c.hidden.clone().requires_grad_(true), w = c.weight.clone().requires_grad_(true);
    auto loss = at::cross_entropy_loss(at::linear(h, w).to(at::kFloat), c.targets, {}, at::Reduction::None, -100);
    (loss * c.upstream).sum().backward();
    naive = {loss.detach(), h.grad(), w.grad()};
  }
  CHECK(fused.grad_weight.scalar_type() == at::kFloat);
  check_close_to_exact(fused, naive, exact);
}
