#pragma once
// LlamaConfig: the shape of a Llama-family model, read from librho YAML or a Hugging Face config.json.
// Families (config.json's model_type): llama (Llama 2 and 3.x, TinyLlama, SmolLM2), mistral, qwen2 (Qwen2, Qwen2.5).
#include <cstdint>
#include <string>
#include <vector>

namespace rho {

enum class ModelFamily {
  Llama,    // optional attention and MLP biases; RoPE scaling linear or llama3
  Mistral,  // a sliding attention window
  Qwen2,    // biases on q, k and v (not o)
};
enum class RopeScaling {
  None,
  Linear,  // positions divided by rope_factor
  Llama3,  // Llama 3.1+: low frequencies divided by rope_factor, a smooth band between (transformers' "llama3")
};

struct LlamaConfig {
  ModelFamily family = ModelFamily::Llama;
  int64_t vocab_size = 32000;
  int64_t hidden_size = 4096;
  int64_t intermediate_size = 11008;
  int64_t num_layers = 32;
  int64_t num_heads = 32;
  int64_t num_kv_heads = 32;
  int64_t head_dim = 0;  // 0: hidden_size / num_heads
  double rope_theta = 10000.0;
  double rms_norm_eps = 1e-6;
  int64_t max_position_embeddings = 2048;
  int64_t sliding_window = 0;  // 0: full causal attention (Mistral's window is enforced, not ignored)
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // llama: biases on q, k, v and o
  bool mlp_bias = false;        // llama: biases on gate, up and down
  RopeScaling rope_scaling = RopeScaling::None;
  double rope_factor = 1.0;                         // linear, llama3
  double rope_low_freq_factor = 1.0;                // llama3
  double rope_high_freq_factor = 4.0;               // llama3
  int64_t rope_original_max_position_embeddings = 8192;  // llama3: the context the base model was trained at
  int64_t bos_token_id = 1;
  int64_t eos_token_id = 2;
  double initializer_range = 0.02;

  int64_t head_size() const { return head_dim > 0 ? head_dim : hidden_size / num_heads; }
  bool qkv_bias() const { return family == ModelFamily::Qwen2 || attention_bias; }
  bool o_bias() const { return attention_bias; }
  // Exact number of parameters of the model this config describes (same count as transformers').
  int64_t num_parameters() const;
  // Throws rho::Error naming the first invalid field; `source` names the file in the message.
  void validate(const std::string& source) const;

  // librho YAML: either the model mapping itself or a document with a top-level `model:` key.
  static LlamaConfig from_yaml_file(const std::string& path);
  static LlamaConfig from_yaml_string(const std::string& text, const std::string& source = "<yaml>");
  // Hugging Face config.json (model_type llama, mistral or qwen2), read as transformers reads it: keys that change
  // nothing librho computes (special-token ids, generation settings, metadata) are accepted; a key that would change
  // the result and that librho does not implement (another rope_scaling type, quantization, partial rotary, a
  // sliding window in Qwen2, another model_type, ...) is refused by name with what is supported. Keys it does not
  // know are ignored and listed in `unknown` (the loaders print them).
  static LlamaConfig from_hf_json_file(const std::string& path, std::vector<std::string>* unknown = nullptr);
  static LlamaConfig from_hf_json_string(const std::string& text, const std::string& source = "<json>",
                                         std::vector<std::string>* unknown = nullptr);
  std::string to_hf_json(const std::string& torch_dtype = "float32") const;
  std::string to_yaml() const;
};

// Whether attention copies keys and values to every query head before scaled-dot-product attention (grouped-query
// attention only). On CUDA the kernels that take head groups as they are (flash, cuDNN) run only in bf16 or fp16
// without a mask; otherwise the memory-efficient kernel runs, and it takes no groups: given them, PyTorch falls back
// to its math kernel, which keeps [heads, queries, keys] probabilities for backward. The CPU's fused kernel takes
// groups. The memory planner counts the copies (librho/model/memory_plan.h).
inline bool attention_expands_kv(int64_t num_heads, int64_t num_kv_heads, bool cuda, bool half_precision, bool masked) {
  return num_kv_heads != num_heads && cuda && (!half_precision || masked);
}

}  // namespace rho
