#pragma once
// The librho transformer: a Llama-family causal LM (RMSNorm, rotary embeddings, grouped-query attention
// through torch's scaled-dot-product attention, SwiGLU MLP) as torch::nn modules. Parameter names follow
// Hugging Face's LlamaForCausalLM without its "model." prefix, so checkpoint interop is a rename.
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>

#include <vector>

#include "librho/model/config.h"

namespace rho {

struct RMSNormImpl : torch::nn::Module {
  RMSNormImpl(int64_t dim, double eps);
  at::Tensor forward(const at::Tensor& x);
  at::Tensor weight;
  double eps;
};
TORCH_MODULE(RMSNorm);

// Keys and values of the positions seen so far, one pair per layer, for incremental decoding.
struct KVCache {
  std::vector<at::Tensor> keys, values;  // [batch, kv_heads, past, head_dim]
  // Batched decoding of prompts of different lengths (left padding), set by LlamaImpl::hidden_states when it is
  // given a `valid` mask: which cached positions hold real tokens ([batch, past] bool), and the attention mask of
  // the current call ([batch, 1, new, past + new] bool). Undefined for one unpadded sequence.
  at::Tensor valid, step_mask;
  int64_t length() const { return keys.empty() || !keys[0].defined() ? 0 : keys[0].size(2); }
  // Keeps only batch rows `rows` ([k] int64, on the cache's device): finished sequences leave the batch.
  void keep_rows(const at::Tensor& rows);
};

struct AttentionImpl : torch::nn::Module {
  explicit AttentionImpl(const LlamaConfig& c);
  // x: [batch, seq, hidden]; cos/sin: [seq, head_dim]; `cache` (optional) holds and receives past keys/values.
  at::Tensor forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, KVCache* cache, int64_t layer);
  torch::nn::Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};
  int64_t num_heads, num_kv_heads, head_dim, sliding_window;
};
TORCH_MODULE(Attention);

struct MLPImpl : torch::nn::Module {
  explicit MLPImpl(const LlamaConfig& c);
  at::Tensor forward(const at::Tensor& x);  // down(silu(gate(x)) * up(x))
  torch::nn::Linear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
};
TORCH_MODULE(MLP);

struct DecoderLayerImpl : torch::nn::Module {
  explicit DecoderLayerImpl(const LlamaConfig& c);
  at::Tensor forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, KVCache* cache, int64_t layer);
  RMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
  Attention self_attn{nullptr};
  MLP mlp{nullptr};
};
TORCH_MODULE(DecoderLayer);

// Called by LlamaImpl::hidden_states around each decoder layer: sharded parameters gather a layer's weights just
// before it runs and free them after it (librho/dist/sharded.h). after_layer returns the layer's output, to which
// it may attach a gradient hook.
struct LayerHooks {
  virtual ~LayerHooks() = default;
  virtual void before_layer(size_t layer) = 0;
  virtual at::Tensor after_layer(size_t layer, const at::Tensor& output) = 0;
};

struct LlamaImpl : torch::nn::Module {
  explicit LlamaImpl(const LlamaConfig& config);

  // tokens: [batch, seq] int64 -> final hidden states [batch, seq, hidden] (after the last RMSNorm).
  // With a cache, positions continue after the cached ones and the cache is extended.
  // `valid` ([batch, seq] bool, with a cache only): batched decoding of left-padded sequences; false marks
  // padding, which no real token attends to, and each row's positions count its real tokens only, so every row
  // computes what it would alone. Once a cache has been used with `valid`, every call on it must give one.
  at::Tensor hidden_states(const at::Tensor& tokens, KVCache* cache = nullptr, const at::Tensor& valid = {});
  at::Tensor logits(const at::Tensor& hidden);  // [..., hidden] -> [..., vocab]
  at::Tensor forward(const at::Tensor& tokens) { return logits(hidden_states(tokens)); }
  // Next-token loss per position, no reduction: [batch, seq] fp32, where targets[b, t] is the token after
  // tokens[b, t]. Logits are made `rows_per_chunk` rows at a time, so the full fp32 [batch, seq, vocab]
  // tensor never exists at once; with gradients on, the backward recomputes them chunk by chunk too
  // (linear_cross_entropy), so training never holds them either.
  at::Tensor token_loss(const at::Tensor& tokens, const at::Tensor& targets, int64_t rows_per_chunk = 4096);
  at::Tensor token_loss_from_hidden(const at::Tensor& hidden, const at::Tensor& targets, int64_t rows_per_chunk = 4096);

  const at::Tensor& output_weight() const;  // lm_head's weight, or the embedding when tied
  void reset_parameters(uint64_t seed);      // normal(0, initializer_range) linears and embedding, norms 1
  int64_t num_parameters() const;
  // sha256 over every parameter's name and fp32 bytes: the model's identity in manifests.
  std::string weights_sha256() const;

  LlamaConfig config;
  // Recompute each layer's activations in the backward pass instead of keeping them (less memory, one more
  // forward's compute). Only used when gradients are being recorded.
  bool activation_checkpointing = false;
  LayerHooks* layer_hooks = nullptr;  // not owned; null: none
  torch::nn::Embedding embed_tokens{nullptr};
  torch::nn::ModuleList layers{nullptr};
  RMSNorm norm{nullptr};
  torch::nn::Linear lm_head{nullptr};  // null when tie_word_embeddings

 private:
  std::pair<at::Tensor, at::Tensor> rope(int64_t start, int64_t length, const at::Tensor& like);
  at::Tensor rope_cos_, rope_sin_;  // [max_positions, head_dim] fp32, made lazily on the model's device
};
TORCH_MODULE(Llama);

}  // namespace rho
