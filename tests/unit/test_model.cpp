#include <ATen/ATen.h>
#include <ATen/record_function.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/function.h>
#include <torch/cuda.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <functional>
#include <limits>
#include <sstream>
#include <tuple>

#include "helpers.h"
#include "librho/kernels/fused_sum.h"
#include "librho/kernels/rotary.h"
#include "librho/kernels/swiglu.h"
#include "librho/model/autocast.h"
#include "librho/model/lean_ops.h"
#include "librho/model/llama.h"
#include "librho/model/memory_plan.h"
#include "librho/util/peak_memory.h"

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

namespace {
// Leaf tensors with gradients, random values.
at::Tensor leaf(at::IntArrayRef shape, at::ScalarType dtype, uint64_t seed) {
  return at::randn(shape, at::make_generator<at::CPUGeneratorImpl>(seed)).to(dtype).requires_grad_(true);
}
// The result and the gradients of `inputs` after backward from sum(result * g) for a fixed random g.
std::vector<at::Tensor> value_and_grads(const at::Tensor& result, const std::vector<at::Tensor>& inputs) {
  const auto g = at::randn(result.sizes(), at::make_generator<at::CPUGeneratorImpl>(99))
                     .to(result.device(), result.scalar_type());
  (result * g).sum().backward();
  std::vector<at::Tensor> out{result.detach()};
  for (const auto& t : inputs) out.push_back(t.grad().clone());
  return out;
}
// |a - b| / |b| in fp64.
double relative_error(const at::Tensor& a, const at::Tensor& b) {
  return ((a.to(at::kDouble) - b.to(at::kDouble)).norm() / b.to(at::kDouble).norm()).item<double>();
}
void check_bitwise(const std::vector<at::Tensor>& lean, const std::vector<at::Tensor>& plain) {
  REQUIRE(lean.size() == plain.size());
  for (size_t i = 0; i < lean.size(); ++i) {
    INFO("tensor " << i << " (0: the result, then the inputs' gradients)");
    CHECK(lean[i].scalar_type() == plain[i].scalar_type());
    CHECK(at::equal(lean[i], plain[i]));
  }
}
}  // namespace

TEST_CASE("lean rms_norm and swiglu: values and gradients bitwise those of the plain operations", "[model]") {
  for (auto dt : {at::kFloat, at::kBFloat16}) {
    INFO("dtype " << dt);
    auto lean = [&](bool use_lean) {
      auto x = leaf({3, 5, 64}, dt, 1), w = leaf({64}, dt, 2);
      const auto y = use_lean ? rho::rms_norm(x, w, 1e-5)
                              : w.to(dt) * at::rms_norm(x.to(at::kFloat), {64}, std::nullopt, 1e-5).to(dt);
      return value_and_grads(y, {x, w});
    };
    check_bitwise(lean(true), lean(false));
    auto gated = [&](bool use_lean) {
      auto gate = leaf({4, 7, 48}, dt, 3), up = leaf({4, 7, 48}, dt, 4);
      return value_and_grads(use_lean ? rho::swiglu(gate, up) : at::silu(gate) * up, {gate, up});
    };
    check_bitwise(gated(true), gated(false));
  }
  // No second derivatives: the reciprocal RMS is kept as a constant.
  const auto x = leaf({2, 8}, at::kFloat, 9), w = leaf({8}, at::kFloat, 10);
  CHECK_THROWS_WITH(torch::autograd::grad({rho::rms_norm(x, w, 1e-6).pow(2).sum()}, {x}, {}, true, true),
                    Catch::Matchers::Contains("no double backward"));
  // Without gradients both take the plain path's values too.
  at::NoGradGuard no_grad;
  const auto a = at::randn({2, 32}), v = at::randn({32});
  CHECK(at::equal(rho::rms_norm(a, v, 1e-6), v * at::rms_norm(a, {32}, std::nullopt, 1e-6)));
}

namespace {
// Three projections of one fp32 input under bf16 autocast on `device`, read by different operations after them (as
// q, k and v are), so the gradients reach the input along paths of different lengths, in an order autograd
// chooses. shared: through SharedInput; otherwise each projection gets an input of its own (autocast casts each), so
// each input's gradient is what autocast makes for that projection, and x's is their sum in the views' order.
// Returns the result, the weights' gradients and x's. (x is not a leaf, as in the model: autocast caches the cast of
// a leaf, which the projections would share.)
std::vector<at::Tensor> three_projections(bool shared, at::Device device) {
  auto on = [&](at::Tensor t) { return t.detach().to(device).requires_grad_(true); };
  std::vector<at::Tensor> x_leaf, w{on(leaf({24, 32}, at::kFloat, 6)), on(leaf({8, 32}, at::kFloat, 7)),
                                    on(leaf({8, 32}, at::kFloat, 8))};
  for (int i = 0; i < (shared ? 1 : 3); ++i) x_leaf.push_back(on(leaf({2, 9, 32}, at::kFloat, 5)));
  rho::AutocastScope autocast(device.type(), at::kBFloat16);
  const rho::SharedInput in(x_leaf[0] * 1.0, 3);
  std::vector<at::Tensor> views, outs;
  for (size_t i = 0; i < w.size(); ++i) {
    views.push_back(shared ? in.view(static_cast<int64_t>(i)) : x_leaf[i] * 1.0);
    outs.push_back(at::linear(views.back(), w[i]));
  }
  if (shared) {
    CHECK(views[0].scalar_type() == at::kBFloat16);
    CHECK(views[0].data_ptr() == views[2].data_ptr());  // one copy, however many projections read it
  }
  const auto y = at::cat({outs[0] * 1.5, (outs[1] * 2).sin(), outs[2]}, -1).to(at::kFloat);
  std::vector<at::Tensor> inputs = w;
  inputs.insert(inputs.end(), x_leaf.begin(), x_leaf.end());
  auto result = value_and_grads(y, inputs);
  if (!shared) {
    const auto sum = (result[4] + result[5]) + result[6];
    result.resize(4);
    result.push_back(sum);
  }
  CHECK(result[4].scalar_type() == at::kFloat);
  return result;
}
}  // namespace

TEST_CASE("SharedInput under bf16 autocast: one copy for every projection, values and gradients bitwise autocast's",
          "[model][autocast]") {
  // (bf16 gradients summed in fp32 are exact unless their exponents lie far apart, so autograd's order mostly
  // agrees with the views' order.)
  check_bitwise(three_projections(true, at::kCPU), three_projections(false, at::kCPU));
}

TEST_CASE("SharedInput on CUDA under bf16 autocast: values and gradients as autocast's per-projection casts",
          "[model][cuda]") {
  if (!rho::test::cuda_or_skip()) return;
  const auto shared = three_projections(true, at::kCUDA), plain = three_projections(false, at::kCUDA);
  REQUIRE(shared.size() == plain.size());
  for (size_t i = 0; i < shared.size(); ++i) {
    INFO("tensor " << i << " (0: the result, then the weights' gradients, then x's)");
    CHECK(shared[i].scalar_type() == plain[i].scalar_type());
    // The same GEMMs on the same inputs: equal, but for a library free to pick another kernel between runs.
    CHECK(relative_error(shared[i], plain[i]) <= 1e-6);
  }
}

TEST_CASE("SharedInput: a view no projection reads adds nothing to the input's gradient", "[model][autocast]") {
  auto x_leaf = leaf({2, 9, 32}, at::kFloat, 5);
  const auto w0 = leaf({24, 32}, at::kFloat, 6), w2 = leaf({8, 32}, at::kFloat, 8);
  at::Tensor shared_grad, alone_grad;
  {
    rho::AutocastScope autocast(at::kCPU, at::kBFloat16);
    const rho::SharedInput in(x_leaf * 1.0, 3);  // view 1 is never read
    const auto y = at::cat({at::linear(in.view(0), w0), at::linear(in.view(2), w2)}, -1).to(at::kFloat);
    shared_grad = value_and_grads(y, {x_leaf})[1];
  }
  x_leaf.mutable_grad() = at::Tensor();
  {
    rho::AutocastScope autocast(at::kCPU, at::kBFloat16);
    const auto a = x_leaf * 1.0, b = x_leaf * 1.0;
    const auto y = at::cat({at::linear(a, w0), at::linear(b, w2)}, -1).to(at::kFloat);
    alone_grad = value_and_grads(y, {x_leaf})[1];
  }
  CHECK(at::equal(shared_grad, alone_grad));
}

TEST_CASE("sum_as: the defined parts summed in order in the given dtype", "[model]") {
  const auto a = at::randn({5, 7}).to(at::kBFloat16), b = at::randn({5, 7}).to(at::kBFloat16),
             c = at::randn({5, 7}).to(at::kBFloat16);
  const auto f = [](const at::Tensor& t) { return t.to(at::kFloat); };
  CHECK(at::equal(rho::sum_as({a, b, c}, at::kFloat), (f(a) + f(b)) + f(c)));
  // The order shows in fp32 parts (bf16 parts, converted to fp32, mostly sum exactly in any order).
  const auto p = at::randn({1000}), q = at::randn({1000}) * 1e3, r = at::randn({1000}) * 1e-3;
  CHECK(at::equal(rho::sum_as({p, q, r}, at::kFloat), (p + q) + r));
  CHECK_FALSE(at::equal(rho::sum_as({p, q, r}, at::kFloat), (r + q) + p));
  CHECK(at::equal(rho::sum_as({at::Tensor(), b, at::Tensor(), c}, at::kFloat), f(b) + f(c)));
  const auto one = rho::sum_as({a}, at::kBFloat16);
  CHECK(at::equal(one, a));
  CHECK(one.data_ptr() != a.data_ptr());  // owned: the caller may add to it
  CHECK_FALSE(rho::sum_as({at::Tensor(), at::Tensor()}, at::kFloat).defined());
}

namespace {
// A decoder layer written with plain operations, as transformers' LlamaDecoderLayer computes it, on `l`'s weights.
at::Tensor plain_layer(rho::DecoderLayerImpl& l, const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  auto norm = [](const rho::RMSNorm& n, const at::Tensor& h) {
    return n->weight.to(h.scalar_type()) *
           at::rms_norm(h.to(at::kFloat), {h.size(-1)}, std::nullopt, n->eps).to(h.scalar_type());
  };
  auto rope = [](const at::Tensor& t, const at::Tensor& c, const at::Tensor& s) {
    const int64_t half = t.size(-1) / 2;
    return t * c + at::cat({-t.narrow(-1, half, half), t.narrow(-1, 0, half)}, -1) * s;
  };
  const auto& a = *l.self_attn;
  const int64_t b = x.size(0), t = x.size(1), d = a.head_dim;
  const auto n1 = norm(l.input_layernorm, x);
  auto q = at::linear(n1, a.q_proj->weight).view({b, t, a.num_heads, d}).transpose(1, 2);
  auto k = at::linear(n1, a.k_proj->weight).view({b, t, a.num_kv_heads, d}).transpose(1, 2);
  const auto v = at::linear(n1, a.v_proj->weight).view({b, t, a.num_kv_heads, d}).transpose(1, 2);
  const auto c = cos.to(q.scalar_type()), s = sin.to(q.scalar_type());
  q = rope(q, c, s);
  k = rope(k, c, s);
  const auto y = at::scaled_dot_product_attention(q, k, v, {}, 0.0, true, std::nullopt, a.num_kv_heads != a.num_heads);
  const auto h = x + at::linear(y.transpose(1, 2).reshape({b, t, -1}), a.o_proj->weight);
  const auto n2 = norm(l.post_attention_layernorm, h);
  const auto& m = *l.mlp;
  return h + at::linear(at::silu(at::linear(n2, m.gate_proj->weight)) * at::linear(n2, m.up_proj->weight),
                        m.down_proj->weight);
}
}  // namespace

// Alone, each lean piece gives autograd's gradients bit for bit; in a layer, where a tensor's gradient is the sum of
// several paths' (the residual stream and a norm), autograd adds them in another order, so the layer's gradients
// agree to fp32 rounding only.
TEST_CASE("a decoder layer: values bitwise, gradients to fp32 rounding those of the plain operations",
          "[model][autocast]") {
  auto c = tiny();
  c.hidden_size = 64;
  c.num_heads = 4;
  c.intermediate_size = 96;
  rho::Llama model(c);
  model->reset_parameters(12);
  auto& layer = model->layers->at<rho::DecoderLayerImpl>(0);
  const auto cos = at::randn({16, 16}, at::make_generator<at::CPUGeneratorImpl>(13)),
             sin = at::randn({16, 16}, at::make_generator<at::CPUGeneratorImpl>(14));
  const auto sin_signed = at::cat({-sin.narrow(-1, 0, 8), sin.narrow(-1, 8, 8)}, -1);  // the layer's form (apply_rotary)
  for (const bool bf16 : {false, true}) {
    INFO((bf16 ? "bf16 autocast" : "fp32"));
    auto run = [&](bool lean) {
      const auto x_leaf = leaf({3, 16, 64}, at::kFloat, 15);
      const auto x = x_leaf * 1.0;
      at::Tensor out;
      {
        rho::AutocastScope autocast(at::kCPU, at::kBFloat16, bf16);
        out = lean ? layer.forward(x, cos, sin_signed, nullptr, 0) : plain_layer(layer, x, cos, sin);
      }
      std::vector<at::Tensor> inputs{x_leaf};
      for (const auto& p : layer.parameters()) inputs.push_back(p);
      auto result = value_and_grads(out, inputs);
      for (auto& p : layer.parameters()) p.mutable_grad().reset();
      return result;
    };
    const auto lean = run(true), plain = run(false);
    CHECK(at::equal(lean[0], plain[0]));
    for (size_t i = 1; i < lean.size(); ++i) {
      INFO("gradient " << i << " (1: the input's, then the layer's parameters')");
      CHECK(relative_error(lean[i], plain[i]) < 1e-6);
    }
  }
}

namespace {
// The bytes a forward with gradients leaves allocated for its backward (less autocast's weight copies) over
// what forward_activation_bytes plans, for fp32 and bf16 autocast, with and without activation checkpointing.
// On CUDA the attention kernels are the fused ones (flash or cuDNN), which keep other tensors than the CPU's.
void check_forward_activations(at::Device device, double tolerance) {
  auto c = rho::test::tiny_llama(256, 256);
  c.hidden_size = 128;
  c.intermediate_size = 352;
  c.num_layers = 3;
  rho::Llama m(c);
  m->to(device);
  const int64_t batch = 4, seq = 128;
  const auto x = at::randint(3, 256, {batch, seq + 1}, at::make_generator<at::CPUGeneratorImpl>(1)).to(device);
  const auto inputs = x.narrow(1, 0, seq), targets = x.narrow(1, 1, seq);
  // Autocast's bf16 copies of the layers' matrices, kept from forward to backward (weights, not activations).
  int64_t matrices = 0;
  for (const auto& p : m->layers->parameters())
    if (p.dim() == 2) matrices += p.numel();
  for (const bool bf16 : {false, true}) {
    rho::AutocastScope warm_autocast(device.type(), at::kBFloat16, bf16);
    at::NoGradGuard warm_up;  // made once, by the first forward: the rotary tables, cuBLAS's workspaces
    m->token_loss(inputs, targets);
  }
  for (const bool bf16 : {false, true})
    for (const bool checkpointing : {false, true}) {
      m->activation_checkpointing = checkpointing;
      rho::MemoryPlanOptions o;
      o.seq_len = seq;
      o.micro_batch = batch;
      o.bf16 = bf16;
      o.cuda = device.is_cuda();
      o.activation_checkpointing = checkpointing;
      const int64_t planned = rho::forward_activation_bytes(c, o);
      rho::AutocastScope autocast(device.type(), at::kBFloat16, bf16);
      rho::PeakMemory memory(device);
      auto loss = m->token_loss(inputs, targets);
      const int64_t copies = bf16 && !checkpointing ? 2 * matrices : 0;
      const double kept = static_cast<double>(memory.current() - copies);
      std::ostringstream what;
      what << device << ", " << (bf16 ? "bf16 autocast" : "fp32") << (checkpointing ? ", activation checkpointing" : "")
           << ": kept " << kept << " bytes, planned " << planned << ", ratio " << kept / planned;
      INFO(what.str());
      if (device.is_cuda()) WARN(what.str());  // in the GPU kit's log, pass or fail
      CHECK(kept / planned == Approx(1.0).epsilon(tolerance));
      loss.sum().backward();
      for (auto& p : m->parameters()) p.mutable_grad().reset();
    }
}
}  // namespace

TEST_CASE("the forward keeps the bytes the memory planner counts (fp32, bf16 autocast, checkpointing)", "[model][memory]") {
  check_forward_activations(at::kCPU, 0.005);
}

TEST_CASE("on CUDA the forward keeps the bytes the memory planner counts", "[model][memory][cuda]") {
  if (!rho::test::cuda_or_skip()) return;
  check_forward_activations(at::kCUDA, 0.02);
}

TEST_CASE("lean rms_norm and swiglu on CUDA: values bitwise, gradients bitwise (swiglu) or to fp32 rounding",
          "[model][cuda]") {
  if (!rho::test::cuda_or_skip()) return;
  auto on_cuda = [](const at::Tensor& t) { return t.detach().to(at::kCUDA).requires_grad_(true); };
  auto run = [&](bool lean) {
    const auto x = on_cuda(leaf({4, 33, 256}, at::kFloat, 21)), w = on_cuda(leaf({256}, at::kFloat, 22));
    const auto gate = on_cuda(leaf({4, 33, 96}, at::kBFloat16, 23)), up = on_cuda(leaf({4, 33, 96}, at::kBFloat16, 24));
    const auto y = lean ? rho::rms_norm(x, w, 1e-5) : w * at::rms_norm(x, {256}, std::nullopt, 1e-5);
    const auto z = lean ? rho::swiglu(gate, up) : at::silu(gate) * up;
    auto a = value_and_grads(y, {x, w}), b = value_and_grads(z, {gate, up});
    a.insert(a.end(), b.begin(), b.end());
    return a;
  };
  const auto lean = run(true), plain = run(false);
  CHECK(at::equal(lean[0], plain[0]));
  CHECK(at::equal(lean[3], plain[3]));
  for (size_t i : {1, 2}) {
    INFO("gradient " << i);
    CHECK(relative_error(lean[i], plain[i]) < 1e-6);
  }
  CHECK(at::equal(lean[4], plain[4]));  // swiglu's gradients: one kernel (rho::swiglu_gradients), the same values
  CHECK(at::equal(lean[5], plain[5]));
}

TEST_CASE("expand_kv_heads: attention over keys and values copied to every head equals grouped-query attention",
          "[model]") {
  const auto q = leaf({2, 6, 5, 8}, at::kFloat, 41), k = leaf({2, 3, 5, 8}, at::kFloat, 42),
             v = leaf({2, 3, 5, 8}, at::kFloat, 43);
  const auto mask = at::rand({2, 1, 5, 5}, at::make_generator<at::CPUGeneratorImpl>(44)) < 0.7;
  for (const bool masked : {false, true}) {
    INFO((masked ? "a boolean mask" : "causal"));
    const auto m = masked ? std::optional<at::Tensor>(mask | at::eye(5, at::kBool)) : std::nullopt;
    auto attend = [&](const at::Tensor& keys, const at::Tensor& values, bool gqa) {
      return at::scaled_dot_product_attention(q, keys, values, m, 0.0, !masked, std::nullopt, gqa);
    };
    const auto grouped = value_and_grads(attend(k, v, true), {q, k, v});
    for (const auto& t : {q, k, v}) t.mutable_grad().reset();
    const auto copied =
        value_and_grads(attend(rho::expand_kv_heads(k, 6), rho::expand_kv_heads(v, 6), false), {q, k, v});
    for (const auto& t : {q, k, v}) t.mutable_grad().reset();
    for (size_t i = 0; i < grouped.size(); ++i) {
      INFO("tensor " << i << " (0: the output, then the gradients of q, k and v)");
      CHECK(relative_error(copied[i], grouped[i]) < 1e-6);
    }
    // Head h reads kv head h / 2; the other order (h % 3, as repeat gives) is another attention.
    at::NoGradGuard no_grad;
    CHECK(relative_error(attend(k.repeat({1, 2, 1, 1}), v.repeat({1, 2, 1, 1}), false), grouped[0]) > 0.1);
  }
  // The planner counts the copies where the model makes them: fp32 on CUDA.
  auto c = rho::test::tiny_llama(256, 256);
  rho::MemoryPlanOptions o;
  o.seq_len = 64;
  for (const bool bf16 : {false, true}) {
    o.bf16 = bf16;
    o.cuda = false;
    const int64_t cpu = rho::forward_activation_bytes(c, o);
    o.cuda = true;
    const int64_t cuda = rho::forward_activation_bytes(c, o);
    const int64_t copies =
        bf16 ? 0 : c.num_layers * o.seq_len * 4 * 2 * (c.num_heads - c.num_kv_heads) * c.head_size();
    CHECK(cuda - cpu == copies);
  }
}

namespace {
// decode_attention against scaled_dot_product_attention on `device`: one query position per row, grouped keys
// read through a view of a larger cache (as a ragged cache's columns), with and without a mask.
void check_decode_attention(at::Device device, at::ScalarType dtype, double tolerance) {
  auto rnd = [&](at::IntArrayRef shape, uint64_t seed) {
    return at::randn(shape, at::make_generator<at::CPUGeneratorImpl>(seed)).to(device, dtype);
  };
  const int64_t keys = 37;
  const auto q = rnd({3, 6, 1, 16}, 51);
  const auto k_cache = rnd({3, 2, 64, 16}, 52), v_cache = rnd({3, 2, 64, 16}, 53);
  const auto k = k_cache.narrow(2, 0, keys), v = v_cache.narrow(2, 0, keys);
  const auto seen = at::arange(keys).view({1, -1}) <= at::tensor(std::vector<int64_t>{36, 10, 0}).view({-1, 1});
  const auto mask = seen.view({3, 1, 1, keys}).to(device);
  for (const bool masked : {false, true}) {
    INFO((masked ? "masked" : "every key seen"));
    const auto m = masked ? std::optional<at::Tensor>(mask) : std::nullopt;
    const auto got = rho::decode_attention(q, k, v, m);
    CHECK(got.scalar_type() == dtype);
    CHECK(got.sizes() == q.sizes());
    auto f32 = [](const at::Tensor& t) { return t.to(at::kFloat); };
    const auto want = at::scaled_dot_product_attention(f32(q), f32(k), f32(v), m, 0.0, false, std::nullopt, true);
    CHECK(relative_error(got, want) < tolerance);
    // Query head h reads kv head h / 3; the other pairing (h % 2, as repeat gives) is another attention.
    const auto other = at::scaled_dot_product_attention(f32(q), f32(k).repeat({1, 3, 1, 1}),
                                                        f32(v).repeat({1, 3, 1, 1}), m, 0.0, false);
    CHECK(relative_error(got, other) > 0.1);
    // The same from contiguous keys (bit-identical on the CPU; on CUDA the batched product's strides differ, and
    // cuBLAS may pick another algorithm), and unseen columns do not count: their keys and values changed, the same
    // bits (they add exact zeros).
    const auto contiguous = rho::decode_attention(q, k.contiguous(), v.contiguous(), m);
    if (device.is_cpu()) {
      CHECK(at::equal(contiguous, got));
    } else {
      CHECK(relative_error(contiguous, got) < tolerance);
    }
    if (masked) {
      const auto hidden = (~mask).view({3, 1, keys, 1});
      CHECK(at::equal(rho::decode_attention(q, k.masked_fill(hidden, 1e4), v.masked_fill(hidden, -1e4), m),
                      contiguous));  // masked_fill's results are contiguous too
    }
  }
}
}  // namespace

namespace {
// apply_rotary on `device` against autograd over rotate_half: values and gradients bit for bit, for x contiguous and
// as attention makes q and k (a transposed view), with the loss's gradient random and (a sum) expanded. On CUDA
// both directions run rho::rotary's kernel; with create_graph the backward runs the operations, so that a second
// derivative exists.
void check_apply_rotary_on(at::Device device) {
  const int64_t d = 16;
  auto angles = at::randn({7, d / 2}, at::make_generator<at::CPUGeneratorImpl>(31));
  angles[0].zero_();  // position 0, as every sequence has it: sin 0
  const auto cos = at::cat({angles.cos(), angles.cos()}, -1), sin = at::cat({angles.sin(), angles.sin()}, -1);
  const auto sin_signed = at::cat({-angles.sin(), angles.sin()}, -1);
  for (const auto dt : {at::kFloat, at::kBFloat16}) {
    const auto c = cos.to(device, dt), s = sin.to(device, dt), ss = sin_signed.to(device, dt);
    for (const bool transposed : {false, true}) {
      for (const bool summed : {false, true}) {
        INFO(c10::toString(dt) << (transposed ? ", x a transposed view" : ", x contiguous")
                               << (summed ? ", loss a sum" : ", loss random"));
        auto run = [&](bool rotary) {
          const auto x_leaf = leaf(transposed ? at::IntArrayRef{2, 7, 3, d} : at::IntArrayRef{2, 3, 7, d}, dt, 32)
                                  .detach().to(device).requires_grad_(true);
          const auto x = transposed ? x_leaf.transpose(1, 2) : x_leaf;
          const auto x1 = x.narrow(-1, 0, d / 2), x2 = x.narrow(-1, d / 2, d / 2);
          const auto y = rotary ? rho::apply_rotary(x, c, ss) : x * c + at::cat({-x2, x1}, -1) * s;
          if (rotary) CHECK(y.grad_fn()->name().find("RotaryFunction") != std::string::npos);  // one node
          if (!summed) return value_and_grads(y, {x_leaf});
          y.sum().backward();  // the gradient reaching the node: ones, expanded (stride 0)
          return std::vector<at::Tensor>{y.detach(), x_leaf.grad()};
        };
        check_bitwise(run(true), run(false));
      }
    }
    at::NoGradGuard no_grad;  // inference: the same values, with no node
    const auto x = leaf({2, 3, 7, d}, dt, 33).detach().to(device);
    CHECK(at::equal(rho::apply_rotary(x, c, ss), x * c + at::cat({-x.narrow(-1, d / 2, d / 2), x.narrow(-1, 0, d / 2)}, -1) * s));
  }
  // A second derivative: the backward under create_graph is recorded (d/dx of sum(grad * w) through it).
  const auto c = cos.to(device), ss = sin_signed.to(device), s = sin.to(device);
  auto second = [&](bool rotary) {
    const auto x = leaf({2, 7, d}, at::kFloat, 34).detach().to(device).requires_grad_(true);
    const auto x1 = x.narrow(-1, 0, d / 2), x2 = x.narrow(-1, d / 2, d / 2);
    const auto y = rotary ? rho::apply_rotary(x, c, ss) : x * c + at::cat({-x2, x1}, -1) * s;
    const auto g = torch::autograd::grad({(y * y).sum()}, {x}, {}, true, true)[0];
    return torch::autograd::grad({(g * g).sum()}, {x})[0];
  };
  CHECK(at::allclose(second(true), second(false), 1e-6, 1e-6));
}
}  // namespace

TEST_CASE("apply_rotary: values and gradients bit for bit those of autograd over rotate_half", "[model]") {
  check_apply_rotary_on(at::kCPU);
}

TEST_CASE("apply_rotary on CUDA: values and gradients bit for bit those of autograd over rotate_half",
          "[model][cuda]") {
  if (!rho::test::cuda_or_skip()) return;
  check_apply_rotary_on(at::kCUDA);
}

namespace {
// Equal bit for bit (at::equal compares values: -0 equals +0 there), with NaN where the other has NaN.
void check_same_bits(const at::Tensor& a, const at::Tensor& b) {
  REQUIRE(a.scalar_type() == b.scalar_type());
  REQUIRE(a.sizes() == b.sizes());
  CHECK(at::equal(a.isnan(), b.isnan()));
  const auto bits = a.element_size() == 2 ? at::kShort : a.element_size() == 4 ? at::kInt : at::kLong;
  const auto numbers = ~a.isnan();  // NaN's payload is not a result of the arithmetic
  CHECK(at::equal(a.contiguous().view(bits).masked_select(numbers), b.contiguous().view(bits).masked_select(numbers)));
}

// rho::rotary against the four operations it replaces (x * cos + cat(x2, x1) * sin, and the transposed form of
// the backward), bit for bit, on `device`: every dtype; x contiguous, a transposed view (q and k as attention
// makes them) and with a last dimension of stride 2; tables of one row per position ([t, d]), per batch row and
// position ([b, 1, t, d], as ragged decoding gives them), one of each, and a strided sin; infinities, NaN, zeros
// and values whose products are subnormal.
void check_rotary_on(at::Device device) {
  const int64_t b = 2, t = 5, heads = 3, d = 16, h = d / 2;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(41);
  auto swap = [&](const at::Tensor& v) { return at::cat({v.narrow(-1, h, h), v.narrow(-1, 0, h)}, -1); };
  auto values = [&](at::IntArrayRef shape) {  // random, with the special values at fixed places (one per pair)
    auto v = at::randn(shape, gen, at::kDouble);
    v.select(-1, 0).select(0, 0).fill_(std::numeric_limits<double>::infinity());
    v.select(-1, h + 1).select(0, 0).fill_(-std::numeric_limits<double>::infinity());
    v.select(-1, 2).select(0, 1).fill_(std::numeric_limits<double>::quiet_NaN());
    v.select(-1, 3).zero_();
    v.select(-1, 4).mul_(1e-39);  // fp32 and bf16: subnormal, fp16: zero
    return v;
  };
  for (const auto dt : {at::kFloat, at::kDouble, at::kBFloat16, at::kHalf}) {
    const auto on = [&](const at::Tensor& v) { return v.to(device, dt); };
    const auto angles = at::randn({b, 1, t, h}, gen, at::kDouble) * 3;
    const auto cos_rows = on(at::cat({angles.cos(), angles.cos()}, -1));
    const auto sin_rows = on(at::cat({-angles.sin(), angles.sin()}, -1));
    const auto sin_wide = on(at::cat({-angles.sin(), angles.sin()}, -1).repeat_interleave(2, -1));  // [.., 2d]
    const auto contiguous = on(values({b, heads, t, d}));
    const auto as_attention = on(values({b, t, heads, d})).transpose(1, 2);
    const auto strided = on(values({b, heads, t, 2 * d})).slice(-1, 0, 2 * d, 2);
    const auto first = [](const at::Tensor& table) { return table.select(0, 0).select(0, 0); };  // [t, d]
    const std::vector<std::tuple<at::Tensor, at::Tensor, const char*>> tables{
        {first(cos_rows), first(sin_rows), "tables [t, d]"},
        {cos_rows, sin_rows, "tables [b, 1, t, d]"},
        {first(cos_rows), sin_rows, "cos [t, d], sin [b, 1, t, d]"},
        {cos_rows, sin_wide.slice(-1, 0, 2 * d, 2), "sin of last stride 2"}};
    for (const auto& [x, x_name] : {std::pair{contiguous, "contiguous"}, std::pair{as_attention, "transposed view"},
                                    std::pair{strided, "last stride 2"}}) {
      for (const auto& [c, s, tables_name] : tables) {
        INFO(c10::toString(dt) << ", x " << x_name << ", " << tables_name);
        REQUIRE(rho::rotary_supports(x, c, s));
        const auto forward = rho::rotary(x, c, s, false);
        check_same_bits(forward, x * c + swap(x) * s);
        CHECK(forward.strides() == (x.is_non_overlapping_and_dense() ? x.strides() : forward.contiguous().strides()));
        check_same_bits(rho::rotary(x, c, s, true), x * c + swap(x * s));
      }
    }
  }
  // What it refuses (apply_rotary then runs the operations themselves).
  const auto x = at::randn({2, 4, 8}).to(device), c = at::randn({4, 8}).to(device);
  CHECK_FALSE(rho::rotary_supports(x.narrow(-1, 0, 7), c.narrow(-1, 0, 7), c.narrow(-1, 0, 7)));  // odd
  CHECK_FALSE(rho::rotary_supports(x, c.to(at::kDouble), c));                                      // dtypes differ
  CHECK_FALSE(rho::rotary_supports(x, c.narrow(0, 0, 3), c));                                      // 3 rows for 4
  CHECK_FALSE(rho::rotary_supports(x.to(at::kLong), c.to(at::kLong), c.to(at::kLong)));           // integers
  CHECK_FALSE(rho::rotary_supports(x.view({1, 1, 1, 1, 1, 2, 4, 8}), c, c));                       // 8 dimensions
  CHECK_FALSE(rho::rotary_supports(x._neg_view(), c, c));                                          // lazy negation
  CHECK_THROWS_WITH(rho::rotary(x, c.narrow(0, 0, 3), c, false), Catch::Contains("rotary: unsupported operands"));
}
}  // namespace

TEST_CASE("rotary: one pass, bit for bit the operations it replaces", "[model]") { check_rotary_on(at::kCPU); }

TEST_CASE("rotary on CUDA: one kernel, bit for bit the operations it replaces", "[model][cuda]") {
  if (!rho::test::cuda_or_skip()) return;
  check_rotary_on(at::kCUDA);
}

TEST_CASE("rotary on CUDA at scale: many blocks, and offsets for the 64-bit index kernel", "[model][cuda]") {
  if (!rho::test::cuda_or_skip()) return;
  auto swap = [](const at::Tensor& v, int64_t h) { return at::cat({v.narrow(-1, h, h), v.narrow(-1, 0, h)}, -1); };
  SECTION("a launch of many blocks, each thread several pairs (the grid-stride loop)") {
    const auto opts = at::TensorOptions().device(at::kCUDA).dtype(at::kBFloat16);
    const auto x = at::randn({2, 4096, 32, 128}, opts).transpose(1, 2), c = at::randn({4096, 128}, opts),
               s = at::randn({4096, 128}, opts);
    check_same_bits(rho::rotary(x, c, s, false), x * c + swap(x, 64) * s);
    check_same_bits(rho::rotary(x, c, s, true), x * c + swap(x * s, 64));
  }
  SECTION("offsets past 2^30 elements: the 64-bit index kernel") {
    const auto opts = at::TensorOptions().device(at::kCUDA).dtype(at::kHalf);
    const auto storage = at::randn({(int64_t{1} << 30) + 16}, opts);  // 2 GiB
    const auto x = storage.as_strided({2, 16}, {int64_t{1} << 30, 1}), c = at::randn({16}, opts),
               s = at::randn({16}, opts);
    check_same_bits(rho::rotary(x, c, s, false), x * c + swap(x, 8) * s);
    check_same_bits(rho::rotary(x, c, s, true), x * c + swap(x * s, 8));
  }
}

namespace {
// Calls of a RecordFunction scope named `name` (librho's kernels name theirs) on this thread while `run` runs.
int64_t scope_calls(const char* name, const std::function<void()>& run) {
  static thread_local const char* wanted = nullptr;
  static thread_local int64_t calls = 0;
  wanted = name;
  calls = 0;
  const auto handle = at::addThreadLocalCallback(
      at::RecordFunctionCallback([](const at::RecordFunction& fn) -> std::unique_ptr<at::ObserverContext> {
        if (std::strcmp(fn.name(), wanted) == 0) ++calls;
        return nullptr;
      }));
  run();
  at::removeCallback(handle);
  return calls;
}


// rho::fused_sum against converting the first part to fp32 and adding the others to it in order, bit for bit, on
// `device`: 2 and 3 parts of bf16, fp16 and fp32, contiguous and as transposed views (mixed: refused), with values of
// exponents so far apart that their fp32 sum rounds (so the order shows); and rho::sum_as, which uses it on CUDA
// unless autograd records.
void check_fused_sum_on(at::Device device) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(43);
  for (const auto dt : {at::kBFloat16, at::kHalf, at::kFloat}) {
    const double far = dt == at::kHalf ? 1e4 : 1e8;  // fp16 ends at 65504
    std::vector<at::Tensor> parts;
    for (int i = 0; i < 4; ++i) {
      auto v = at::randn({6, 5, 40}, gen, at::kDouble);
      v.select(-1, i).mul_(i % 2 ? far : 1 / far);
      parts.push_back(v.to(device, dt));
    }
    for (const char* layout : {"contiguous", "transposed views", "mixed"}) {
      for (size_t n = 2; n <= 3; ++n) {
        INFO(c10::toString(dt) << ", " << n << " parts, " << layout);
        std::vector<at::Tensor> these;
        for (size_t i = 0; i < n; ++i) {
          const bool strided =
              std::strcmp(layout, "transposed views") == 0 || (std::strcmp(layout, "mixed") == 0 && i % 2);
          these.push_back(strided ? parts[i].transpose(0, 1).contiguous().transpose(0, 1) : parts[i]);
        }
        auto in_order = these[0].to(at::kFloat, false, true);
        for (size_t i = 1; i < n; ++i) in_order.add_(these[i]);
        if (std::strcmp(layout, "mixed") == 0) {  // not one layout: sum_as runs the operations
          CHECK_FALSE(rho::fused_sum_supports(these));
          at::Tensor by_sum_as;
          CHECK(scope_calls("rho::fused_sum", [&] { by_sum_as = rho::sum_as(these, at::kFloat); }) == 0);
          check_same_bits(by_sum_as, in_order);
          continue;
        }
        REQUIRE(rho::fused_sum_supports(these));
        const auto fused = rho::fused_sum(these);
        check_same_bits(fused, in_order);
        CHECK(fused.strides() == these[0].strides());
        if (n >= 3) {  // the order matters for these values
          auto reversed = these[n - 1].to(at::kFloat, false, true);
          for (size_t i = n - 1; i-- > 0;) reversed.add_(these[i]);
          CHECK_FALSE(at::equal(fused, reversed));
        }
        at::Tensor by_sum_as;
        const int64_t calls = scope_calls("rho::fused_sum", [&] { by_sum_as = rho::sum_as(these, at::kFloat); });
        CHECK(calls == (device.is_cuda() ? 1 : 0));
        check_same_bits(by_sum_as, in_order);
      }
    }
  }
  // Where autograd records (a backward under create_graph), sum_as runs the operations, so the sum has a history.
  std::vector<at::Tensor> tracked{at::randn({3, 4}).to(device).requires_grad_(), at::randn({3, 4}).to(device)};
  at::Tensor recorded;
  CHECK(scope_calls("rho::fused_sum", [&] { recorded = rho::sum_as(tracked, at::kFloat); }) == 0);
  CHECK(recorded.requires_grad());
  const auto a = at::randn({3, 4}).to(device), b = at::randn({3, 4}).to(device);
  CHECK_FALSE(rho::fused_sum_supports({a}));                            // one part
  CHECK_FALSE(rho::fused_sum_supports({a, b, a, b}));                   // four
  CHECK_FALSE(rho::fused_sum_supports({a, b.narrow(0, 0, 2)}));         // shapes differ
  CHECK_FALSE(rho::fused_sum_supports({a, b.to(at::kBFloat16)}));       // dtypes differ
  CHECK_FALSE(rho::fused_sum_supports({a.to(at::kDouble), b.to(at::kDouble)}));
  CHECK_FALSE(rho::fused_sum_supports({a, at::Tensor()}));
  CHECK_THROWS_WITH(rho::fused_sum({a}), Catch::Contains("fused_sum: unsupported parts"));
}
}  // namespace

TEST_CASE("fused_sum: one pass, bit for bit the in-order sum in fp32", "[model]") { check_fused_sum_on(at::kCPU); }

TEST_CASE("fused_sum on CUDA: one kernel, bit for bit the in-order sum in fp32", "[model][cuda]") {
  if (!rho::test::cuda_or_skip()) return;
  check_fused_sum_on(at::kCUDA);
}

namespace {
// a equals b where device is CUDA (bit for bit); on the CPU within `ulps` units in the last place of b's dtype,
// plus `slack` per element (a tensor or 0), with NaN and infinities where b has them.
void check_swiglu_result(at::Device device, const at::Tensor& a, const at::Tensor& b, const at::Tensor& slack = {}) {
  if (device.is_cuda()) return check_same_bits(a, b);
  const double eps = b.scalar_type() == at::kFloat ? 1.2e-7 : b.scalar_type() == at::kHalf ? 9.8e-4 : 7.9e-3;
  const auto ad = a.to(at::kDouble), bd = b.to(at::kDouble);
  CHECK(at::equal(ad.isnan(), bd.isnan()));
  CHECK(at::equal(ad.isinf(), bd.isinf()));
  const auto finite = bd.isfinite();
  auto tolerance = 4 * eps * bd.abs() + 1e-38;
  if (slack.defined()) tolerance = tolerance + slack;
  const auto over = ((ad - bd).abs() > tolerance) & finite;
  INFO(over.sum().item<int64_t>() << " of " << b.numel() << " elements off by more than the tolerance");
  CHECK_FALSE(over.any().item<bool>());
}

// rho::swiglu_values and swiglu_gradients against the operations (at::silu(gate) * up; at::silu_backward(g * up,
// gate) and g * at::silu(gate)) on `device`: bf16, fp16 and fp32, contiguous and as transposed views (mixed: refused), with
// zeros, NaN, infinities and values whose exp overflows or underflows, each in one operand at a time. On CUDA bit
// for bit (the same arithmetic); on the CPU, where ATen's vectorised exp and the C library's differ in the last
// bit now and then, within four units in the last place (and, for silu's backward, which cancels near silu's
// minimum, that much of |g * up| in fp32). Then rho::swiglu through autograd: the kernels run on CUDA (and not
// under create_graph), the operations elsewhere, with the operations' values and gradients.
void check_swiglu_on(at::Device device) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(47);
  auto values = [&](at::ScalarType dt, int64_t shift) {  // the special values in columns that differ per operand
    auto v = at::randn({6, 5, 40}, gen, at::kDouble) * 4;
    v.select(-1, shift + 0).zero_();
    v.select(-1, shift + 1).fill_(std::numeric_limits<double>::infinity());
    v.select(-1, shift + 2).fill_(-std::numeric_limits<double>::infinity());
    v.select(-1, shift + 3).fill_(100.0);   // exp(-x) underflows
    v.select(-1, shift + 4).fill_(-100.0);  // exp(-x) overflows: silu is -0
    v.select(-1, shift + 5).fill_(std::numeric_limits<double>::quiet_NaN());
    return v.to(device, dt);
  };
  for (const auto dt : {at::kBFloat16, at::kHalf, at::kFloat}) {
    const auto gate0 = values(dt, 0), up0 = values(dt, 8), g0 = values(dt, 16);
    for (const char* layout : {"contiguous", "transposed views", "mixed"}) {
      INFO(c10::toString(dt) << ", " << layout);
      auto lay = [&](const at::Tensor& t, bool strided) {
        return strided ? t.transpose(0, 1).contiguous().transpose(0, 1) : t;
      };
      const bool all = std::strcmp(layout, "transposed views") == 0, mixed = std::strcmp(layout, "mixed") == 0;
      const auto gate = lay(gate0, all), up = lay(up0, all || mixed), g = lay(g0, all);
      if (mixed) {  // not one layout: rho::swiglu runs the operations
        CHECK_FALSE(rho::swiglu_supports(gate, up, g));
        continue;
      }
      REQUIRE(rho::swiglu_supports(gate, up, g));
      const auto y = rho::swiglu_values(gate, up);
      check_swiglu_result(device, y, at::silu(gate) * up);
      CHECK(y.strides() == gate.strides());
      const auto [grad_gate, grad_up] = rho::swiglu_gradients(g, gate, up);
      const auto cancels = 4 * 1.2e-7 * (g.to(at::kDouble) * up.to(at::kDouble)).abs().nan_to_num(0, 0, 0);
      check_swiglu_result(device, grad_gate, at::silu_backward(g * up, gate), cancels);
      check_swiglu_result(device, grad_up, g * at::silu(gate));
    }
  }
  // Through autograd (rho::swiglu, as the decoder layer calls it), bf16.
  auto run = [&](bool lean, bool create_graph, int64_t* kernel_calls) {
    const auto gate = leaf({4, 9, 48}, at::kBFloat16, 48).detach().to(device).requires_grad_(true);
    const auto up = leaf({4, 9, 48}, at::kBFloat16, 49).detach().to(device).requires_grad_(true);
    const auto g = leaf({4, 9, 48}, at::kBFloat16, 50).detach().to(device);
    at::Tensor z;
    std::vector<at::Tensor> grads;
    const auto body = [&] {
      z = lean ? rho::swiglu(gate, up) : at::silu(gate) * up;
      grads = torch::autograd::grad({z}, {gate, up}, {g}, create_graph, create_graph);
    };
    *kernel_calls = scope_calls("rho::swiglu_values", body);
    *kernel_calls += scope_calls("rho::swiglu_gradients", body);
    return std::vector<at::Tensor>{z.detach(), grads[0].detach(), grads[1].detach()};
  };
  int64_t calls = 0, plain_calls = 0;
  const auto plain = run(false, false, &plain_calls);
  check_bitwise(run(true, false, &calls), plain);
  // `body` runs twice, once counting forward kernels, once backward ones: one of each on CUDA.
  CHECK(calls == (device.is_cuda() ? 2 : 0));
  check_bitwise(run(true, true, &calls), plain);
  CHECK(calls == (device.is_cuda() ? 1 : 0));  // under create_graph the backward runs the operations
  CHECK(plain_calls == 0);
  const auto a = at::randn({3, 4}).to(device), b = at::randn({3, 4}).to(device);
  CHECK_FALSE(rho::swiglu_supports(a, b.narrow(0, 0, 2)));
  CHECK_FALSE(rho::swiglu_supports(a, b.to(at::kBFloat16)));
  CHECK_FALSE(rho::swiglu_supports(a.to(at::kDouble), b.to(at::kDouble)));
  CHECK_FALSE(rho::swiglu_supports(a, b, b.to(at::kHalf)));
  CHECK_THROWS_WITH(rho::swiglu_values(a, b.narrow(0, 0, 2)), Catch::Contains("swiglu_values: unsupported operands"));
}
}  // namespace

TEST_CASE("swiglu passes: one each way, the operations' values", "[model]") { check_swiglu_on(at::kCPU); }

TEST_CASE("swiglu passes on CUDA: one kernel each way, bit for bit the operations", "[model][cuda]") {
  if (!rho::test::cuda_or_skip()) return;
  check_swiglu_on(at::kCUDA);
}

TEST_CASE("swiglu passes on CUDA: every bf16 and fp16 gate, a million fp32 ones, bit for bit the operations",
          "[model][cuda]") {
  if (!rho::test::cuda_or_skip()) return;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(51);
  const auto every = at::arange(-32768, 32768, at::kInt).to(at::kShort);  // every 16-bit pattern
  for (const auto dt : {at::kBFloat16, at::kHalf, at::kFloat}) {
    INFO(c10::toString(dt));
    const auto gate = (dt == at::kFloat ? at::randn({1 << 20}, gen) * 8 : every.view(dt)).to(at::kCUDA);
    const auto up = at::randn(gate.sizes(), gen).to(at::kCUDA, dt), g = at::randn(gate.sizes(), gen).to(at::kCUDA, dt);
    check_same_bits(rho::swiglu_values(gate, up), at::silu(gate) * up);
    const auto [grad_gate, grad_up] = rho::swiglu_gradients(g, gate, up);
    check_same_bits(grad_gate, at::silu_backward(g * up, gate));
    check_same_bits(grad_up, g * at::silu(gate));
  }
}

TEST_CASE("decode_attention: one query position against grouped keys, as scaled-dot-product attention",
          "[model]") {
  SECTION("fp32") { check_decode_attention(at::kCPU, at::kFloat, 1e-6); }
  SECTION("bf16") { check_decode_attention(at::kCPU, at::kBFloat16, 1e-2); }
}

TEST_CASE("decode_attention on CUDA: fp32 and bf16 as scaled-dot-product attention", "[model][cuda]") {
  if (!rho::test::cuda_or_skip()) return;
  check_decode_attention(at::kCUDA, at::kFloat, 1e-5);
  check_decode_attention(at::kCUDA, at::kBFloat16, 1e-2);
}

TEST_CASE("largest_micro_batch: the largest micro-batch that fits, 0 when none does", "[memory]") {
  const auto c = rho::LlamaConfig::from_yaml_file(rho::test::source_path("configs/model/tinyllama-1.1b.yaml"));
  rho::MemoryPlanOptions o;
  o.seq_len = 2048;
  for (const double gib : {24.0, 80.0, 141.0})
    for (const bool checkpointing : {false, true}) {
      INFO(gib << " GiB, activation checkpointing " << checkpointing);
      o.device_gib = gib;
      o.activation_checkpointing = checkpointing;
      const int64_t m = rho::largest_micro_batch(c, o);
      REQUIRE(m >= 1);
      auto at = [&](int64_t micro_batch) {
        auto p = o;
        p.micro_batch = micro_batch;
        return rho::plan_memory(c, p);
      };
      CHECK(at(m).fits(gib));
      CHECK_FALSE(at(m + 1).fits(gib));
      CHECK(at(m).micro_batch == m);
    }
  o.device_gib = 8;  // fp32 weights, gradients and AdamW alone are 16 GiB
  CHECK(rho::largest_micro_batch(c, o) == 0);
}

namespace {
// Forward values and gradients (input, weight, bias) of a projection under bf16 autocast on `device`, through
// rho::linear or at::linear, and the gradients in fp64 from the same bf16-rounded operands.
struct LinearRun {
  std::vector<at::Tensor> lean, plain, exact;
};
LinearRun linear_run(at::Device device) {
  auto make = [&](at::IntArrayRef shape, uint64_t seed) {
    return at::randn(shape, at::make_generator<at::CPUGeneratorImpl>(seed)).to(device).requires_grad_(true);
  };
  const auto g = at::randn({3, 40, 48}, at::make_generator<at::CPUGeneratorImpl>(30)).to(device);
  auto run = [&](int kind) {  // 0 lean, 1 plain, 2 exact
    auto x_leaf = make({3, 40, 64}, 31), w = make({48, 64}, 32), b = make({48}, 33);
    at::Tensor y;
    if (kind == 2) {  // fp64 leaves holding the bf16-rounded operands
      auto r = [](const at::Tensor& t) { return t.detach().to(at::kBFloat16).to(at::kDouble).requires_grad_(true); };
      x_leaf = r(x_leaf), w = r(w), b = r(b);
      y = at::linear(x_leaf, w, b);
    } else {
      const auto x = x_leaf * 1.0;  // not a leaf, as in the model
      rho::AutocastScope autocast(device.type(), at::kBFloat16);
      y = kind == 0 ? rho::linear(x, w, b) : at::linear(x, w, b);
    }
    (y * g.to(at::kBFloat16).to(y.scalar_type())).sum().backward();
    return std::vector<at::Tensor>{y.detach().cpu(), x_leaf.grad().cpu(), w.grad().cpu(), b.grad().cpu()};
  };
  return {run(0), run(1), run(2)};
}
}  // namespace

TEST_CASE("rho::linear under CPU bf16 autocast: autocast's values, fp32 gradients as autograd makes them", "[model][autocast]") {
  const auto r = linear_run(at::kCPU);
  CHECK(at::equal(r.lean[0], r.plain[0]));
  for (size_t i = 1; i < 4; ++i) {
    INFO("gradient " << i << " (input, weight, bias)");
    CHECK(r.lean[i].scalar_type() == at::kFloat);
    CHECK(relative_error(r.lean[i], r.plain[i]) < 1e-6);
  }
  // Without autocast it is at::linear.
  const auto x = at::randn({4, 8}), w = at::randn({3, 8});
  CHECK(at::equal(rho::linear(x, w), at::linear(x, w)));
  // A plain at::linear after it in the same scope reads autocast's cached copy of the weight, and that copy has
  // its gradient edge: the weight's gradient counts both uses.
  auto twice = [&](bool lean_first) {
    const auto wl = w.clone().requires_grad_(true);
    {
      rho::AutocastScope autocast(at::kCPU, at::kBFloat16);
      const auto y = lean_first ? rho::linear(x, wl) : at::linear(x, wl);
      (y.sum() + at::linear(x, wl).sum()).to(at::kFloat).backward();
    }
    return wl.grad();
  };
  const auto both = twice(true);
  REQUIRE(both.defined());
  CHECK(relative_error(both, twice(false)) < 1e-6);
}

TEST_CASE("rho::linear on CUDA: autocast's values, weight and bias gradients without bf16 rounding", "[model][cuda]") {
  if (!rho::test::cuda_or_skip()) return;
  const auto r = linear_run(at::kCUDA);
  CHECK(at::equal(r.lean[0], r.plain[0]));
  CHECK(relative_error(r.lean[1], r.plain[1]) < 1e-6);  // the input's gradient: the same bf16 GEMM
  for (size_t i : {2, 3}) {
    INFO("gradient " << i << " (weight, bias): lean " << relative_error(r.lean[i], r.exact[i]) << ", autocast "
                     << relative_error(r.plain[i], r.exact[i]) << " from fp64");
    CHECK(r.lean[i].scalar_type() == at::kFloat);
    CHECK(relative_error(r.lean[i], r.exact[i]) < 0.1 * relative_error(r.plain[i], r.exact[i]));
  }
}
