#pragma once
// Hugging Face checkpoint directories: config.json + model.safetensors (or shards with
// model.safetensors.index.json), fp32/fp16/bf16, loaded into and saved from the librho transformer.
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "librho/model/llama.h"

namespace rho {

// librho parameter name -> Hugging Face LlamaForCausalLM name ("layers.0..." -> "model.layers.0...").
std::string hf_tensor_name(const std::string& librho_name);

// Reads config.json and the weights; the model is fp32 on CPU (move it where you like afterwards).
Llama load_hf_model(const std::string& dir);
// Copies the checkpoint's weights into an existing model; names, shapes and completeness are checked.
void load_hf_weights(LlamaImpl& model, const std::string& dir);

struct HfSaveOptions {
  std::string dtype = "float32";            // float32, bfloat16 or float16
  int64_t max_shard_bytes = 5'000'000'000;  // larger models are split into shards with an index file
};
// Writes the directory atomically: a temporary directory is filled, then renamed into place.
void save_hf_model(LlamaImpl& model, const std::string& dir, const HfSaveOptions& options = {});
// The same, from tensors made one at a time: `shapes` lists the parameters (librho names) in order, and
// tensor(i) is called once for each, in order; only one output file's tensors are held at once (sharded
// training gathers its weights unit by unit this way).
void save_hf_tensors(const LlamaConfig& config, const std::vector<std::pair<std::string, std::vector<int64_t>>>& shapes,
                     const std::function<at::Tensor(size_t)>& tensor, const std::string& dir,
                     const HfSaveOptions& options = {});

}  // namespace rho
