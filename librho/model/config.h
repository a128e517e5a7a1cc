#pragma once
// LlamaConfig: the shape of a Llama-family model, read from librho YAML or a Hugging Face config.json.
#include <cstdint>
#include <string>

namespace rho {

struct LlamaConfig {
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
  int64_t bos_token_id = 1;
  int64_t eos_token_id = 2;
  double initializer_range = 0.02;

  int64_t head_size() const { return head_dim > 0 ? head_dim : hidden_size / num_heads; }
  // Exact number of parameters of the model this config describes (same count as transformers').
  int64_t num_parameters() const;
  // Throws rho::Error naming the first invalid field; `source` names the file in the message.
  void validate(const std::string& source) const;

  // librho YAML: either the model mapping itself or a document with a top-level `model:` key.
  static LlamaConfig from_yaml_file(const std::string& path);
  static LlamaConfig from_yaml_string(const std::string& text, const std::string& source = "<yaml>");
  // Hugging Face config.json (model_type llama or mistral).
  static LlamaConfig from_hf_json_file(const std::string& path);
  static LlamaConfig from_hf_json_string(const std::string& text, const std::string& source = "<json>");
  std::string to_hf_json(const std::string& torch_dtype = "float32") const;
  std::string to_yaml() const;
};

}  // namespace rho
