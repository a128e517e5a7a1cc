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

// Keys and values of the positions seen so far, one pair per layer, for incremental decoding. Two layouts:
//  - growing (the default): every row holds length() positions, and each call appends its tokens to every row by
//    concatenation (so a copy of the cache is not changed by later calls on the original);
//  - ragged (KVCache::ragged): a fixed number of rows and of columns per row; row r holds its own row_lengths[r]
//    positions in columns [0, row_lengths[r]), and each call gives one new token per row, written in place after
//    the row's last position. Batched decoding of sequences of different lengths, with rows joining (set_row)
//    and leaving (keep_rows) between calls: nothing is padded and no call copies the cache.
struct KVCache {
  std::vector<at::Tensor> keys, values;  // [rows, kv_heads, positions (growing) or capacity (ragged), head_dim]
  std::vector<int64_t> row_lengths;      // ragged: positions held by each row
  int64_t capacity = 0;                  // ragged: columns per row; 0 for a growing cache
  // Set by LlamaImpl::ragged_step (hidden_states' ragged calls go through it), read by the attention layers: the
  // column each row writes ([rows] int64), the columns read (longest row + 1), and which of them each row's query
  // sees ([rows, 1, 1, step_keys] bool; undefined when every row has the same length, so sees them all).
  at::Tensor step_columns, step_mask;
  int64_t step_keys = 0;

  static KVCache ragged(int64_t rows, int64_t capacity);  // rows of length 0; memory is taken by the first set_row
  bool is_ragged() const { return capacity > 0; }
  int64_t length() const;  // growing: the positions every row holds
  // Ragged: row `row` takes the first `length` positions of row `source_row` of a growing cache (its prefill).
  void set_row(int64_t row, const KVCache& source, int64_t source_row, int64_t length);
  // Keeps only the rows `rows`, in that order (rows of a finished sequence leave the batch).
  void keep_rows(const std::vector<int64_t>& rows);
};

// [batch, kv_heads, seq, head_dim] -> [batch, heads, seq, head_dim]: each key/value head copied to the query heads
// of its group (query head h reads kv head h / (heads / kv_heads), as scaled_dot_product_attention's enable_gqa
// pairs them). Attention does this where attention_expands_kv (config.h) says so.
at::Tensor expand_kv_heads(const at::Tensor& x, int64_t heads);

// Rotary position embedding in the "rotate half" layout of Hugging Face Llama checkpoints: x * cos + rotate_half(x)
// * sin, rotate_half(x) = cat(-x2, x1) over the last dimension (halves x1, x2), computed as x * cos + cat(x2, x1) *
// sin_signed, where sin_signed is sin with its first half negated (the model's table holds it so): the same
// products, bit for bit (a sign moved between factors does not change a product's rounding). With gradients it is
// one autograd node whose backward is g * cos + cat(t2, t1), t = g * sin_signed: autograd's gradient of the plain
// operations, bit for bit. On CUDA both directions are one kernel, rho::rotary (librho/kernels/rotary.h: the same
// values, bit for bit); on the CPU, and for operands rho::rotary does not take, they are those operations.
at::Tensor apply_rotary(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin_signed);

// Attention of one query position per row, as incremental decoding asks: q [batch, heads, 1, head_dim] against
// k, v [batch, kv_heads, keys, head_dim] (kv_heads divides heads; query head h reads kv head h / (heads /
// kv_heads)), and `mask` [batch, 1, 1, keys] (true: the key is seen) or none. Two batched products around an fp32
// softmax: each group's query heads read their keys and values where they lie (a view of the KV cache, no copy per
// head), the scores and softmax are fp32 (products of bf16 inputs accumulate and are written in fp32 on CUDA), and
// the probabilities are cast to v's dtype for the product with v, as the fused kernels do. Nothing depends on the
// key count but the shapes, so every decoding step launches the same kernels: no kernel selection or plan built
// per key count (cuDNN's attention builds one for each new shape), and a step can be recorded in a CUDA graph.
at::Tensor decode_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const std::optional<at::Tensor>& mask);

struct AttentionImpl : torch::nn::Module {
  explicit AttentionImpl(const LlamaConfig& c);
  // x: [batch, seq, hidden]; cos/sin: [seq, head_dim] (sin signed: apply_rotary); `cache` (optional) holds and
  // receives past keys/values.
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
  // With a growing cache, positions continue after the cached ones and the cache is extended. With a ragged one,
  // tokens is [rows, 1]: row r's token takes position row_lengths[r], sees that row's positions only, and is
  // added to the row.
  at::Tensor hidden_states(const at::Tensor& tokens, KVCache* cache = nullptr);
  // One step of a ragged cache with its shapes fixed by the caller, as a CUDA graph's replays need them: row r's
  // token (tokens [rows, 1]) takes position columns[r] ([rows] int64, on the model's device) and sees columns
  // [0, columns[r]] of its row; `keys` columns are read (every columns[r] < keys <= capacity), through a mask when
  // `mask` (always, when the rows' lengths may differ). Device work only once the rotary tables exist (after a
  // first call); the caller keeps row_lengths (hidden_states' ragged calls come here and add one to each).
  at::Tensor ragged_step(const at::Tensor& tokens, const at::Tensor& columns, int64_t keys, bool mask, KVCache& cache);
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
  at::Tensor run_layers(at::Tensor x, const at::Tensor& cos, const at::Tensor& sin, KVCache* cache);  // + final norm
  // [max_positions, head_dim] fp32, made lazily on the model's device: cos, and sin with its first half negated
  // (apply_rotary's sin_signed). rope and ragged_step hand out rows of both, as (cos, sin) everywhere below.
  at::Tensor rope_cos_, rope_sin_;
};
TORCH_MODULE(Llama);

}  // namespace rho
