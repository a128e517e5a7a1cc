#include <ATen/ATen.h>
#include <torch/cuda.h>

#include <catch2/catch.hpp>

#include "helpers.h"
#include "librho/model/llama.h"

namespace {
rho::LlamaConfig tiny(bool tied = false, int64_t kv = 2) {
  auto c = rho::test::tiny_llama(97, 64);
  c.intermediate_size = 80;
  c.num_kv_heads = kv;
  c.tie_word_embeddings = tied;
  return c;
}
}  // namespace

TEST_CASE("Llama forward: shapes, causality and per-token loss", "[model]") {
  for (int64_t kv : {1, 2, 4}) {
    rho::Llama m(tiny(kv == 2, kv));
    m->reset_parameters(7);
    at::manual_seed(1);
    auto x = at::randint(0, 97, {3, 16});
    auto logits = m->forward(x);
    REQUIRE(logits.sizes() == at::IntArrayRef({3, 16, 97}));
    // Changing a later token leaves earlier logits alone.
    auto x2 = x.clone();
    x2.index_put_({at::indexing::Slice(), 10}, (x2.index({at::indexing::Slice(), 10}) + 1) % 97);
    auto logits2 = m->forward(x2);
    CHECK(at::allclose(logits.narrow(1, 0, 10), logits2.narrow(1, 0, 10), 1e-6, 1e-6));
    CHECK_FALSE(at::allclose(logits.narrow(1, 10, 6), logits2.narrow(1, 10, 6)));
    // The chunked per-token loss equals full-logits cross-entropy, for any chunk size.
    auto y = at::randint(0, 97, {3, 16});
    auto full = at::cross_entropy_loss(logits.reshape({-1, 97}), y.reshape({-1}), {}, at::Reduction::None)
                    .view({3, 16});
    for (int64_t rows : {5, 48, 4096}) CHECK(at::allclose(m->token_loss(x, y, rows), full, 1e-6, 1e-6));
  }
}

TEST_CASE("KV-cached incremental decoding equals a full forward pass", "[model]") {
  rho::Llama m(tiny());
  m->reset_parameters(3);
  at::NoGradGuard no_grad;
  auto x = at::randint(0, 97, {2, 12});
  auto full = m->forward(x);
  rho::KVCache cache;
  std::vector<at::Tensor> steps;
  steps.push_back(m->logits(m->hidden_states(x.narrow(1, 0, 5), &cache)));  // prefill 5
  steps.push_back(m->logits(m->hidden_states(x.narrow(1, 5, 3), &cache)));  // a block of 3 after a cache
  for (int64_t t = 8; t < 12; ++t) steps.push_back(m->logits(m->hidden_states(x.narrow(1, t, 1), &cache)));
  CHECK(cache.length() == 12);
  CHECK(at::allclose(at::cat(steps, 1), full, 1e-5, 1e-5));
}

TEST_CASE("same seed gives same weights, and limits are enforced", "[model]") {
  rho::Llama a(tiny()), b(tiny());
  a->reset_parameters(11);
  b->reset_parameters(11);
  for (size_t i = 0; i < a->parameters().size(); ++i) CHECK(at::equal(a->parameters()[i], b->parameters()[i]));
  auto too_long = at::zeros({1, 65}, at::kLong);
  CHECK_THROWS_WITH(a->forward(too_long), Catch::Matchers::Contains("max_position_embeddings=64"));
}

TEST_CASE("activation checkpointing gives the same loss and gradients", "[model]") {
  auto grads = [](bool checkpointing) {
    rho::Llama m(tiny());
    m->reset_parameters(9);
    m->activation_checkpointing = checkpointing;
    auto x = at::randint(0, 97, {2, 16}, at::make_generator<at::CPUGeneratorImpl>(4));
    auto loss = m->token_loss(x.narrow(1, 0, 15), x.narrow(1, 1, 15)).mean();
    loss.backward();
    std::vector<at::Tensor> g{loss.detach()};
    for (auto& p : m->parameters()) g.push_back(p.grad().clone());
    return g;
  };
  const auto plain = grads(false), ckpt = grads(true);
  REQUIRE(plain.size() == ckpt.size());
  for (size_t i = 0; i < plain.size(); ++i) CHECK(at::allclose(plain[i], ckpt[i], 1e-6, 1e-7));
}

TEST_CASE("CUDA forward matches CPU (fp32)", "[model][cuda]") {
  if (!rho::test::cuda_or_skip()) return;
  rho::Llama m(tiny());
  m->reset_parameters(5);
  auto x = at::randint(0, 97, {2, 16});
  auto cpu = m->forward(x);
  m->to(at::kCUDA);
  auto gpu = m->forward(x.to(at::kCUDA)).cpu();
  CHECK(at::allclose(cpu, gpu, 1e-3, 1e-3));
}
