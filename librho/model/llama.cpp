#include "librho/model/llama.h"

#include <ATen/core/Reduction.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/bmm.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/cross_entropy_loss.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/outer.h>
#include <ATen/ops/scaled_dot_product_attention.h>
#include <ATen/ops/softmax.h>
#include <ATen/ops/where.h>
#include <ATen/ops/zeros.h>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <ATen/autocast_mode.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/nn/init.h>

#include "librho/kernels/operands.h"
#include "librho/kernels/rotary.h"
#include "librho/model/autocast.h"
#include "librho/model/lean_ops.h"
#include "librho/model/linear_cross_entropy.h"
#include "librho/util/error.h"
#include "librho/util/sha256.h"

namespace rho {

RMSNormImpl::RMSNormImpl(int64_t dim, double eps) : eps(eps) {
  weight = register_parameter("weight", at::ones({dim}));
}

at::Tensor RMSNormImpl::forward(const at::Tensor& x) { return rho::rms_norm(x, weight, eps); }

AttentionImpl::AttentionImpl(const LlamaConfig& c)
    : num_heads(c.num_heads), num_kv_heads(c.num_kv_heads), head_dim(c.head_size()), sliding_window(c.sliding_window) {
  auto lin = [](int64_t in, int64_t out, bool bias) {
    return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(bias));
  };
  q_proj = register_module("q_proj", lin(c.hidden_size, num_heads * head_dim, c.qkv_bias()));
  k_proj = register_module("k_proj", lin(c.hidden_size, num_kv_heads * head_dim, c.qkv_bias()));
  v_proj = register_module("v_proj", lin(c.hidden_size, num_kv_heads * head_dim, c.qkv_bias()));
  o_proj = register_module("o_proj", lin(num_heads * head_dim, c.hidden_size, c.o_bias()));
}

namespace {
// x W^T through rho::linear (lean_ops.h), as Python's F.linear: under autocast the cast of W is cached for the
// scope, once per weight (torch::nn::Linear's C++ forward multiplies by the view W.t(), which autocast casts anew
// at every use), and W's gradient is made in fp32.
at::Tensor project(const torch::nn::Linear& proj, const at::Tensor& x) {
  return rho::linear(x, proj->weight, proj->bias);
}

// [x1, x2] -> [x2, x1] over the last dimension.
at::Tensor swap_halves(const at::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return at::cat({x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

// apply_rotary's values (transpose = false) or their gradient for x = the output's gradient (transpose = true):
// on CUDA rho::rotary's one kernel where it takes the operands, else the operations it stands for (on the CPU
// their vectorised kernels are about as fast as rho::rotary's loop in fp32 and three times as fast in bf16:
// docs/performance.md). Where autograd would record these operations (a backward under create_graph; tables that
// require gradients while x does not) they run as themselves, so that autograd sees them.
at::Tensor rotary_values(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin_signed, bool transpose) {
  if (x.is_cuda() && !kernels::autograd_records({x, cos, sin_signed}) && rotary_supports(x, cos, sin_signed))
    return rotary(x, cos, sin_signed, transpose);
  return transpose ? x * cos + swap_halves(x * sin_signed) : x * cos + swap_halves(x) * sin_signed;
}

// apply_rotary with gradients: one node, keeping only the tables (as autograd's multiplications would).
struct RotaryFunction : torch::autograd::Function<RotaryFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& cos,
                            const at::Tensor& sin_signed) {
    ctx->save_for_backward({cos, sin_signed});
    return rotary_values(x, cos, sin_signed, false);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    return {rotary_values(grads[0], saved[0], saved[1], true), at::Tensor(), at::Tensor()};
  }
};
}  // namespace

at::Tensor apply_rotary(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin_signed) {
  if (at::GradMode::is_enabled() && x.requires_grad()) return RotaryFunction::apply(x, cos, sin_signed);
  return rotary_values(x, cos, sin_signed, false);
}

at::Tensor expand_kv_heads(const at::Tensor& x, int64_t heads) {
  const int64_t b = x.size(0), groups = x.size(1), t = x.size(2), d = x.size(3);
  return x.unsqueeze(2).expand({b, groups, heads / groups, t, d}).reshape({b, heads, t, d});
}

at::Tensor decode_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const std::optional<at::Tensor>& mask) {
  const int64_t b = q.size(0), heads = q.size(1), d = q.size(3), groups = k.size(1), keys = k.size(2);
  TORCH_CHECK(q.size(2) == 1 && heads % groups == 0 && v.size(1) == groups && v.size(2) == keys,
              "decode_attention: q [b, heads, 1, d] and k, v [b, kv_heads, keys, d] with kv_heads dividing heads, got ",
              q.sizes(), ", ", k.sizes(), ", ", v.sizes());
  const auto qg = q.reshape({b * groups, heads / groups, d});
  const auto kt = k.reshape({b * groups, keys, d}).transpose(1, 2);  // a view of a ragged cache's columns
  auto scores = q.is_cuda() ? at::bmm(qg, kt, at::kFloat) : at::bmm(qg.to(at::kFloat), kt.to(at::kFloat));
  scores = scores.view({b, groups, heads / groups, keys}).mul_(1.0 / std::sqrt(static_cast<double>(d)));
  if (mask) scores = at::where(*mask, scores, -std::numeric_limits<float>::infinity());
  const auto probs = at::softmax(scores, -1).to(v.scalar_type());
  return at::bmm(probs.view({b * groups, heads / groups, keys}), v.reshape({b * groups, keys, d}))
      .view({b, heads, 1, d});
}

namespace {
// What a layer's attention reads through a KV cache: the keys and values (the new ones written into the cache),
// how many positions come before the new ones, whether the new ones attend causally among themselves, and the
// mask where one is needed instead.
struct CachedAttention {
  at::Tensor k, v;
  int64_t past = 0;
  bool causal = true;
  std::optional<at::Tensor> mask;
};

// A ragged cache: one new position per row ([b, kv_heads, 1, d]), written after the row's last one
// (KVCache::step_columns); the step reads the first step_keys columns of every row, through step_mask if any.
CachedAttention through_ragged_cache(KVCache& cache, int64_t layer, const at::Tensor& k, const at::Tensor& v) {
  auto& ck = cache.keys.at(layer);
  auto& cv = cache.values.at(layer);
  const auto column = cache.step_columns.view({k.size(0), 1, 1, 1}).expand({k.size(0), k.size(1), 1, k.size(3)});
  ck.scatter_(2, column, k);
  cv.scatter_(2, column, v);
  CachedAttention a{ck.narrow(2, 0, cache.step_keys), cv.narrow(2, 0, cache.step_keys), cache.step_keys - k.size(2),
                    /*causal=*/false, std::nullopt};
  if (cache.step_mask.defined()) a.mask = cache.step_mask;
  return a;
}

// A growing cache: the new positions appended to the layer's; new queries see every past key and the causal part
// of the new ones.
CachedAttention through_growing_cache(KVCache& cache, int64_t layer, const at::Tensor& k, const at::Tensor& v) {
  if (static_cast<int64_t>(cache.keys.size()) <= layer) {
    cache.keys.resize(layer + 1);
    cache.values.resize(layer + 1);
  }
  auto& ck = cache.keys[layer];
  auto& cv = cache.values[layer];
  CachedAttention a{k, v, 0, true, std::nullopt};
  if (ck.defined()) {
    a.past = ck.size(2);
    a.k = at::cat({ck, k}, 2);
    a.v = at::cat({cv, v}, 2);
  }
  ck = a.k;
  cv = a.v;
  const int64_t t = k.size(2);
  if (a.past > 0) {
    a.causal = false;
    if (t > 1) {
      const auto long_options = k.options().dtype(at::kLong);
      a.mask = at::arange(0, a.past + t, long_options).unsqueeze(0) <=
               at::arange(a.past, a.past + t, long_options).unsqueeze(1);
    }
  }
  return a;
}
}  // namespace

at::Tensor AttentionImpl::forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, KVCache* cache,
                                  int64_t layer) {
  const int64_t b = x.size(0), t = x.size(1);
  const SharedInput in(x, 3);
  auto q = project(q_proj, in.view(0)).view({b, t, num_heads, head_dim}).transpose(1, 2);
  auto k = project(k_proj, in.view(1)).view({b, t, num_kv_heads, head_dim}).transpose(1, 2);
  auto v = project(v_proj, in.view(2)).view({b, t, num_kv_heads, head_dim}).transpose(1, 2);
  // Rotate in q's dtype (bf16 under autocast), not in the fp32 of the normalised input.
  const auto c = cos.to(q.scalar_type()), s = sin.to(q.scalar_type());
  q = apply_rotary(q, c, s);
  k = apply_rotary(k, c, s);
  CachedAttention a{k, v, 0, true, std::nullopt};
  if (cache) a = cache->is_ragged() ? through_ragged_cache(*cache, layer, k, v) : through_growing_cache(*cache, layer, k, v);
  const int64_t total = a.past + t;
  if (sliding_window > 0 && total > sliding_window)
    throw Error(fmt::format("sequence of {} positions exceeds the model's sliding window of {} (not implemented)",
                            total, sliding_window));
  at::Tensor y;
  if (cache && t == 1) {  // one new position per row: a decoding step
    y = decode_attention(q, a.k, a.v, a.mask);
  } else {
    const bool half = q.scalar_type() == at::kBFloat16 || q.scalar_type() == at::kHalf;
    if (attention_expands_kv(num_heads, num_kv_heads, q.is_cuda(), half, a.mask.has_value())) {
      a.k = expand_kv_heads(a.k, num_heads);
      a.v = expand_kv_heads(a.v, num_heads);
    }
    y = at::scaled_dot_product_attention(q, a.k, a.v, a.mask, 0.0, a.causal, std::nullopt,
                                         /*enable_gqa=*/a.k.size(1) != num_heads);
  }
  return project(o_proj, y.transpose(1, 2).reshape({b, t, num_heads * head_dim}));
}

MLPImpl::MLPImpl(const LlamaConfig& c) {
  auto lin = [&](int64_t in, int64_t out) {
    return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(c.mlp_bias));
  };
  gate_proj = register_module("gate_proj", lin(c.hidden_size, c.intermediate_size));
  up_proj = register_module("up_proj", lin(c.hidden_size, c.intermediate_size));
  down_proj = register_module("down_proj", lin(c.intermediate_size, c.hidden_size));
}

at::Tensor MLPImpl::forward(const at::Tensor& x) {
  const SharedInput in(x, 2);
  const auto gate = project(gate_proj, in.view(0));
  const auto up = project(up_proj, in.view(1));
  return project(down_proj, rho::swiglu(gate, up));
}

DecoderLayerImpl::DecoderLayerImpl(const LlamaConfig& c) {
  self_attn = register_module("self_attn", Attention(c));
  mlp = register_module("mlp", MLP(c));
  input_layernorm = register_module("input_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps));
  post_attention_layernorm = register_module("post_attention_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps));
}

at::Tensor DecoderLayerImpl::forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, KVCache* cache,
                                     int64_t layer) {
  auto h = x + self_attn->forward(input_layernorm(x), cos, sin, cache, layer);
  return h + mlp(post_attention_layernorm(h));
}

LlamaImpl::LlamaImpl(const LlamaConfig& c) : config(c) {
  config.validate("LlamaConfig");
  embed_tokens = register_module("embed_tokens", torch::nn::Embedding(c.vocab_size, c.hidden_size));
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.num_layers; ++i) layers->push_back(DecoderLayer(c));
  norm = register_module("norm", RMSNorm(c.hidden_size, c.rms_norm_eps));
  if (!c.tie_word_embeddings)
    lm_head = register_module("lm_head",
                              torch::nn::Linear(torch::nn::LinearOptions(c.hidden_size, c.vocab_size).bias(false)));
  reset_parameters(0);
}

void LlamaImpl::reset_parameters(uint64_t seed) {
  at::NoGradGuard no_grad;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  for (auto& item : named_parameters()) {
    auto& p = item.value();
    if (item.key().size() > 5 && item.key().compare(item.key().size() - 5, 5, ".bias") == 0) {
      p.zero_();  // projection biases start at zero (transformers' _init_weights)
    } else if (p.dim() == 1) {
      p.fill_(1.0);
    } else {  // sample on CPU so that the same seed gives the same weights on every device
      p.copy_(at::empty(p.sizes(), at::kFloat).normal_(0.0, config.initializer_range, gen));
    }
  }
}

int64_t LlamaImpl::num_parameters() const {
  int64_t n = 0;
  for (const auto& p : parameters()) n += p.numel();
  return n;
}

std::string LlamaImpl::weights_sha256() const {
  Sha256 h;
  for (const auto& item : named_parameters()) {
    const auto t = item.value().detach().to(at::kCPU, at::kFloat).contiguous();
    h.update(item.key().data(), item.key().size() + 1);
    h.update(t.data_ptr(), t.numel() * sizeof(float));
  }
  return h.hex_digest();
}

const at::Tensor& LlamaImpl::output_weight() const {
  return lm_head ? lm_head->weight : embed_tokens->weight;
}

namespace {
// RoPE scaling of the inverse frequencies, as transformers' rope init functions (linear, llama3) compute them.
at::Tensor scaled_inv_freq(const LlamaConfig& c, const at::Tensor& inv_freq) {
  switch (c.rope_scaling) {
    case RopeScaling::None: return inv_freq;
    case RopeScaling::Linear: return inv_freq / c.rope_factor;
    case RopeScaling::Llama3: {
      const double old_len = static_cast<double>(c.rope_original_max_position_embeddings);
      const double low_freq_wavelen = old_len / c.rope_low_freq_factor;
      const double high_freq_wavelen = old_len / c.rope_high_freq_factor;
      const auto wavelen = 2 * M_PI / inv_freq;
      // wavelength above the low-frequency bound: divided by factor; below the high-frequency bound: kept
      auto out = at::where(wavelen > low_freq_wavelen, inv_freq / c.rope_factor, inv_freq);
      const auto smooth = (old_len / wavelen - c.rope_low_freq_factor) / (c.rope_high_freq_factor - c.rope_low_freq_factor);
      const auto smoothed = (1 - smooth) * out / c.rope_factor + smooth * out;
      const auto medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen);
      return at::where(medium, smoothed, out);
    }
  }
  return inv_freq;
}
}  // namespace

std::pair<at::Tensor, at::Tensor> LlamaImpl::rope(int64_t start, int64_t length, const at::Tensor& like) {
  const int64_t need = start + length;
  if (need > config.max_position_embeddings)
    throw Error(fmt::format("sequence reaches position {} but the model has max_position_embeddings={}", need,
                            config.max_position_embeddings));
  if (!rope_cos_.defined() || rope_cos_.device() != like.device()) {
    const int64_t d = config.head_size();
    auto f32 = at::TensorOptions().dtype(at::kFloat);
    auto inv_freq = scaled_inv_freq(config, 1.0 / at::pow(config.rope_theta,
                                                           at::arange(0, d, 2, f32.dtype(at::kLong)).to(at::kFloat) / d));
    auto freqs = at::outer(at::arange(config.max_position_embeddings, f32.dtype(at::kLong)).to(at::kFloat), inv_freq);
    auto emb = at::cat({freqs, freqs}, -1);
    rope_cos_ = emb.cos().to(like.device());
    rope_sin_ = at::cat({-freqs.sin(), freqs.sin()}, -1).to(like.device());  // rotate_half's sign folded in
  }
  return {rope_cos_.narrow(0, start, length), rope_sin_.narrow(0, start, length)};
}

namespace {
// Activation checkpointing for one decoder layer: the forward keeps only the layer's input; the backward runs
// the layer again with gradients on, under the forward's autocast state (CUDA and CPU), in a scope of its own so
// that autocast's cache of weight copies made by the recompute is cleared with it (else the next forward, after
// the optimizer step, would read copies of the old weights).
struct CheckpointedLayer : torch::autograd::Function<CheckpointedLayer> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& cos,
                            const at::Tensor& sin, int64_t layer_address) {
    ctx->saved_data["layer"] = layer_address;
    for (const auto& [key, dev] : {std::pair{"cuda", at::kCUDA}, std::pair{"cpu", at::kCPU}}) {
      ctx->saved_data[std::string("autocast.") + key] = at::autocast::is_autocast_enabled(dev);
      ctx->saved_data[std::string("autocast_dtype.") + key] =
          static_cast<int64_t>(at::autocast::get_autocast_dtype(dev));
    }
    ctx->save_for_backward({x, cos, sin});
    at::NoGradGuard no_grad;
    // Weight copies made here have no gradient link: kept in autocast's cache, they would be reused by a
    // recompute that runs inside the same autocast scope (backward before the scope ends), and the weights'
    // gradients would be lost.
    const bool cache = at::autocast::is_autocast_cache_enabled();
    at::autocast::set_autocast_cache_enabled(false);
    struct Restore {
      bool on;
      ~Restore() { at::autocast::set_autocast_cache_enabled(on); }
    } restore{cache};
    return reinterpret_cast<DecoderLayerImpl*>(layer_address)->forward(x, cos, sin, nullptr, 0);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    auto* layer = reinterpret_cast<DecoderLayerImpl*>(ctx->saved_data["layer"].toInt());
    auto scope = [&](const char* key, at::DeviceType dev) {
      return std::make_unique<AutocastScope>(
          dev, static_cast<at::ScalarType>(ctx->saved_data[std::string("autocast_dtype.") + key].toInt()),
          ctx->saved_data[std::string("autocast.") + key].toBool());
    };
    auto x = saved[0].detach().requires_grad_(true);
    at::Tensor y;
    {
      at::AutoGradMode grad_on(true);
      const auto cuda = scope("cuda", at::kCUDA), cpu = scope("cpu", at::kCPU);
      y = layer->forward(x, saved[1], saved[2], nullptr, 0);
    }
    torch::autograd::backward({y}, {grads[0]});
    return {x.grad(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};
}  // namespace

int64_t KVCache::length() const {
  TORCH_CHECK(!is_ragged(), "KVCache::length: a ragged cache's rows have their own lengths (row_lengths)");
  return keys.empty() || !keys[0].defined() ? 0 : keys[0].size(2);
}

KVCache KVCache::ragged(int64_t rows, int64_t capacity) {
  TORCH_CHECK(rows > 0 && capacity > 0, "KVCache::ragged: rows and capacity must be positive, got ", rows, " and ",
              capacity);
  KVCache c;
  c.capacity = capacity;
  c.row_lengths.assign(rows, 0);
  return c;
}

void KVCache::set_row(int64_t row, const KVCache& source, int64_t source_row, int64_t length) {
  TORCH_CHECK(is_ragged() && !source.is_ragged(), "KVCache::set_row copies a growing cache's row into a ragged one");
  TORCH_CHECK(row >= 0 && row < static_cast<int64_t>(row_lengths.size()), "KVCache::set_row: no row ", row);
  TORCH_CHECK(length > 0 && length <= source.length() && length <= capacity, "KVCache::set_row: length ", length,
              " is not within the source's ", source.length(), " positions and the capacity ", capacity);
  if (keys.empty()) {  // zeros, not empty: unused columns are read (masked out) and must hold finite values
    for (const auto& k : source.keys)
      keys.push_back(at::zeros({static_cast<int64_t>(row_lengths.size()), k.size(1), capacity, k.size(3)}, k.options()));
    for (const auto& v : source.values)
      values.push_back(at::zeros({static_cast<int64_t>(row_lengths.size()), v.size(1), capacity, v.size(3)}, v.options()));
  }
  TORCH_CHECK(keys.size() == source.keys.size(), "KVCache::set_row: the caches have different layer counts");
  for (size_t l = 0; l < keys.size(); ++l) {
    keys[l][row].narrow(1, 0, length).copy_(source.keys[l][source_row].narrow(1, 0, length));
    values[l][row].narrow(1, 0, length).copy_(source.values[l][source_row].narrow(1, 0, length));
  }
  row_lengths[row] = length;
}

void KVCache::keep_rows(const std::vector<int64_t>& rows) {
  const auto device = keys.empty() ? at::Device(at::kCPU) : keys[0].device();
  const auto index = at::tensor(at::ArrayRef<int64_t>(rows), at::kLong).to(device);
  for (auto* list : {&keys, &values})
    for (auto& t : *list)
      if (t.defined()) t = t.index_select(0, index);
  if (is_ragged()) {
    std::vector<int64_t> kept;
    for (int64_t r : rows) kept.push_back(row_lengths.at(r));
    row_lengths = std::move(kept);
  }
  step_columns = step_mask = at::Tensor();
}

at::Tensor LlamaImpl::hidden_states(const at::Tensor& tokens, KVCache* cache) {
  TORCH_CHECK(tokens.dim() == 2, "tokens must be [batch, seq], got ", tokens.sizes());
  if (cache && cache->is_ragged()) {
    const auto& lengths = cache->row_lengths;
    const auto [shortest, longest] = std::minmax_element(lengths.begin(), lengths.end());
    if (*longest >= cache->capacity)
      throw Error(fmt::format("hidden_states: a row of the ragged cache is full ({} positions)", cache->capacity));
    const auto columns = at::tensor(at::ArrayRef<int64_t>(lengths), at::kLong).to(tokens.device());
    auto h = ragged_step(tokens, columns, *longest + 1, /*mask=*/*shortest != *longest, *cache);
    for (auto& n : cache->row_lengths) ++n;
    return h;
  }
  auto x = embed_tokens(tokens);
  const auto [cos, sin] = rope(cache ? cache->length() : 0, tokens.size(1), x);
  return run_layers(x, cos, sin, cache);
}

at::Tensor LlamaImpl::ragged_step(const at::Tensor& tokens, const at::Tensor& columns, int64_t keys, bool mask,
                                  KVCache& cache) {
  const int64_t b = tokens.size(0);
  TORCH_CHECK(cache.is_ragged() && !cache.keys.empty(), "ragged_step: a ragged cache filled by set_row is needed");
  TORCH_CHECK(tokens.dim() == 2 && b == static_cast<int64_t>(cache.row_lengths.size()) && tokens.size(1) == 1,
              "ragged_step: a ragged cache takes one token for each of its ", cache.row_lengths.size(), " rows, after "
              "set_row has filled them; got ", tokens.sizes());
  TORCH_CHECK(columns.numel() == b && keys >= 1 && keys <= cache.capacity, "ragged_step: ", b, " columns and keys ",
              keys, " within the capacity ", cache.capacity, " are needed");
  auto x = embed_tokens(tokens);
  rope(keys - 1, 1, x);  // checks the position bound and makes the tables (device work only when they exist)
  const auto cos = rope_cos_.index_select(0, columns).view({b, 1, 1, -1});
  const auto sin = rope_sin_.index_select(0, columns).view({b, 1, 1, -1});
  cache.step_columns = columns;
  cache.step_keys = keys;
  cache.step_mask = at::Tensor();
  if (mask) {
    const auto seen = at::arange(keys, columns.options());
    cache.step_mask = (seen.view({1, -1}) <= columns.view({-1, 1})).view({b, 1, 1, keys});
  }
  return run_layers(x, cos, sin, &cache);
}

at::Tensor LlamaImpl::run_layers(at::Tensor x, const at::Tensor& cos_fp32, const at::Tensor& sin_fp32,
                                 KVCache* cache) {
  const bool checkpoint = activation_checkpointing && !cache && at::GradMode::is_enabled();
  // The rotary tables in the dtype of the layers' projections (autocast's, or the activations'), cast once here:
  // each layer's own cast to its q's dtype is then a no-op, two kernels a layer fewer.
  const auto device = x.device().type();
  const bool autocast = at::autocast::is_autocast_enabled(device) && x.scalar_type() != at::kDouble;  // (fp64 stays)
  const auto dtype = autocast ? at::autocast::get_autocast_dtype(device) : x.scalar_type();
  const auto cos = cos_fp32.to(dtype), sin = sin_fp32.to(dtype);
  for (size_t i = 0; i < layers->size(); ++i) {
    auto& layer = layers->at<DecoderLayerImpl>(i);
    if (layer_hooks) layer_hooks->before_layer(i);
    x = checkpoint ? CheckpointedLayer::apply(x, cos, sin, reinterpret_cast<int64_t>(&layer))
                   : layer.forward(x, cos, sin, cache, static_cast<int64_t>(i));
    if (layer_hooks) x = layer_hooks->after_layer(i, x);
  }
  return norm(x);
}

at::Tensor LlamaImpl::logits(const at::Tensor& hidden) { return at::linear(hidden, output_weight()); }

at::Tensor LlamaImpl::token_loss_from_hidden(const at::Tensor& hidden, const at::Tensor& targets,
                                             int64_t rows_per_chunk) {
  const auto shape = targets.sizes().vec();
  auto h = hidden.reshape({-1, hidden.size(-1)});
  auto y = targets.reshape({-1});
  // Training: a custom backward that recomputes each chunk's logits, so autograd never holds fp32 logits.
  if (at::GradMode::is_enabled()) return linear_cross_entropy(h, output_weight(), y, rows_per_chunk).view(shape);
  std::vector<at::Tensor> parts;
  for (int64_t r = 0; r < h.size(0); r += rows_per_chunk) {
    const int64_t n = std::min(rows_per_chunk, h.size(0) - r);
    auto chunk_logits = at::linear(h.narrow(0, r, n), output_weight()).to(at::kFloat);
    parts.push_back(at::cross_entropy_loss(chunk_logits, y.narrow(0, r, n), std::nullopt, at::Reduction::None, -100));
  }
  return at::cat(parts).view(shape);
}

at::Tensor LlamaImpl::token_loss(const at::Tensor& tokens, const at::Tensor& targets, int64_t rows_per_chunk) {
  return token_loss_from_hidden(hidden_states(tokens), targets, rows_per_chunk);
}

}  // namespace rho
