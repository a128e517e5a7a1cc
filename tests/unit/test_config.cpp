#include <catch2/catch.hpp>

#include "helpers.h"
#include "librho/model/config.h"
#include "librho/model/llama.h"
#include "librho/util/error.h"

using rho::LlamaConfig;
using Catch::Matchers::Contains;

TEST_CASE("model configs: parameter counts equal the Hugging Face models'", "[config]") {
  // Counts as transformers reports them for TinyLlama/TinyLlama-1.1B and mistralai/Mistral-7B-v0.1.
  CHECK(LlamaConfig::from_yaml_file(rho::test::source_path("configs/model/tinyllama-1.1b.yaml")).num_parameters() ==
        1'100'048'384);
  CHECK(LlamaConfig::from_yaml_file(rho::test::source_path("configs/model/mistral-7b.yaml")).num_parameters() ==
        7'241'732'096);
  // The closed form agrees with the module's own count, tied and untied.
  for (bool tied : {false, true}) {
    auto c = LlamaConfig::from_yaml_file(rho::test::source_path("configs/model/tiny.yaml"));
    c.tie_word_embeddings = tied;
    rho::Llama m(c);
    CHECK(m->num_parameters() == c.num_parameters());
  }
}

TEST_CASE("YAML config: unknown, mistyped and invalid fields name the file, line and field", "[config]") {
  CHECK_THROWS_WITH(LlamaConfig::from_yaml_string("model:\n  hidden_size: 64\n  hiden_layers: 2\n", "m.yaml"),
                    Contains("m.yaml:3") && Contains("unknown model field 'hiden_layers'"));
  CHECK_THROWS_WITH(LlamaConfig::from_yaml_string("hidden_size: sixty\n", "m.yaml"),
                    Contains("m.yaml:1") && Contains("'hidden_size'") && Contains("wrong type"));
  CHECK_THROWS_WITH(LlamaConfig::from_yaml_string("hidden_size: 64\nnum_heads: 5\nnum_kv_heads: 5\n", "m.yaml"),
                    Contains("not divisible"));
  CHECK_THROWS_WITH(LlamaConfig::from_yaml_string("num_heads: 8\nnum_kv_heads: 3\nhidden_size: 64\n", "m.yaml"),
                    Contains("num_kv_heads"));
  CHECK_THROWS_WITH(LlamaConfig::from_yaml_string("vocab_size: -3\n", "m.yaml"), Contains("'vocab_size' must be positive"));
  CHECK_THROWS_WITH(LlamaConfig::from_yaml_string("a: [\n", "m.yaml"), Contains("invalid YAML"));
  CHECK_THROWS_WITH(LlamaConfig::from_yaml_file("/nonexistent/model.yaml"), Contains("/nonexistent/model.yaml"));
}

TEST_CASE("published config.json files: families, biases, RoPE scaling; to_hf_json round-trips them", "[config]") {
  auto read = [](const char* name, std::vector<std::string>* unknown = nullptr) {
    return LlamaConfig::from_hf_json_file(rho::test::source_path(std::string("tests/data/hf_configs/") + name), unknown);
  };
  std::vector<std::string> unknown;
  const auto smol = read("smollm2-135m-instruct.json", &unknown);
  CHECK(unknown.empty());  // unk_token_id, pad_token_id, is_llama_config, transformers.js_config: known, ignored
  CHECK(smol.family == rho::ModelFamily::Llama);
  CHECK(smol.tie_word_embeddings);
  CHECK(smol.num_parameters() == 134515008);
  const auto llama3 = read("llama-3.2-1b.json");
  CHECK(llama3.rope_scaling == rho::RopeScaling::Llama3);
  CHECK(llama3.rope_factor == 32.0);
  CHECK(llama3.rope_original_max_position_embeddings == 8192);
  CHECK(llama3.num_parameters() == 1235814400);
  const auto qwen = read("qwen2.5-0.5b.json");
  CHECK(qwen.family == rho::ModelFamily::Qwen2);
  CHECK(qwen.qkv_bias());
  CHECK_FALSE(qwen.o_bias());
  CHECK(qwen.sliding_window == 0);  // use_sliding_window false
  CHECK(qwen.num_parameters() == 494032768);
  const auto mistral = read("mistral-7b-v0.1.json");
  CHECK(mistral.family == rho::ModelFamily::Mistral);
  CHECK(mistral.sliding_window == 4096);
  CHECK(read("tinyllama-1.1b.json").num_parameters() == 1100048384);
  for (const auto& c : {smol, llama3, qwen, mistral}) {
    const auto back = LlamaConfig::from_hf_json_string(c.to_hf_json());
    CHECK(back.num_parameters() == c.num_parameters());
    CHECK(back.family == c.family);
    CHECK(back.rope_scaling == c.rope_scaling);
    CHECK(back.sliding_window == c.sliding_window);
    CHECK(LlamaConfig::from_yaml_string(c.to_yaml()).num_parameters() == c.num_parameters());
  }
  // transformers 5.x writes RoPE settings as rope_parameters, rope_theta inside.
  const auto v5 = LlamaConfig::from_hf_json_string(
      R"({"model_type": "llama", "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
          "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}})");
  CHECK(v5.rope_theta == 500000.0);
  CHECK(v5.rope_scaling == rho::RopeScaling::Llama3);
}

TEST_CASE("YAML config: num_kv_heads defaults to num_heads (multi-head attention)", "[config]") {
  const auto c = LlamaConfig::from_yaml_string("hidden_size: 64\nnum_heads: 4\nintermediate_size: 128\n", "m.yaml");
  CHECK(c.num_kv_heads == 4);
  CHECK(LlamaConfig::from_yaml_string("hidden_size: 64\nnum_heads: 4\nnum_kv_heads: 2\n", "m.yaml").num_kv_heads == 2);
}

TEST_CASE("YAML config round-trips through to_yaml", "[config]") {
  auto c = LlamaConfig::from_yaml_file(rho::test::source_path("configs/model/mistral-7b.yaml"));
  auto d = LlamaConfig::from_yaml_string(c.to_yaml());
  CHECK(d.num_parameters() == c.num_parameters());
  CHECK(d.sliding_window == 4096);
  CHECK(d.num_kv_heads == 8);
}

TEST_CASE("config.json: fields, defaults and rejections", "[config]") {
  const char* json = R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
    "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100,
    "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "max_position_embeddings": 128, "tie_word_embeddings": true,
    "eos_token_id": [2, 7], "bos_token_id": 1, "torch_dtype": "bfloat16", "hidden_act": "silu",
    "rope_scaling": null, "_name_or_path": "x"})";
  auto c = LlamaConfig::from_hf_json_string(json, "config.json");
  CHECK(c.num_kv_heads == 4);  // defaults to num_heads
  CHECK(c.tie_word_embeddings);
  CHECK(c.rope_theta == 500000.0);
  CHECK(c.eos_token_id == 2);
  // to_hf_json round-trips
  auto d = LlamaConfig::from_hf_json_string(c.to_hf_json());
  CHECK(d.num_parameters() == c.num_parameters());
  CHECK(d.rope_theta == c.rope_theta);

  // Keys transformers ignores are accepted; unknown ones are listed (the loaders print them).
  std::vector<std::string> unknown;
  CHECK(LlamaConfig::from_hf_json_string(R"({"model_type": "llama", "hidden_sise": 3, "unk_token_id": 0})", "c.json",
                                         &unknown).hidden_size == 4096);
  CHECK(unknown == std::vector<std::string>{"hidden_sise"});
  CHECK_THROWS_WITH(LlamaConfig::from_hf_json_string(R"({"model_type": "gpt2"})", "c.json"),
                    Contains("model_type 'gpt2' is not supported (supported: llama, mistral, qwen2)"));
  // Keys that would change the result and that librho does not implement: refused by name.
  for (const auto& [json, says] : std::vector<std::pair<std::string, std::string>>{
           {R"({"model_type": "llama", "rope_scaling": {"rope_type": "yarn", "factor": 4.0}})", "'yarn'"},
           {R"({"model_type": "llama", "rope_scaling": {"rope_type": "dynamic", "factor": 2.0}})", "'dynamic'"},
           {R"({"model_type": "llama", "quantization_config": {"quant_method": "gptq"}})", "quantization_config"},
           {R"({"model_type": "llama", "partial_rotary_factor": 0.5})", "partial_rotary_factor"},
           {R"({"model_type": "llama", "rope_interleaved": true})", "rope_interleaved"},
           {R"({"model_type": "qwen2", "use_sliding_window": true})", "use_sliding_window"},
           {R"({"model_type": "mistral", "attention_bias": true})", "attention_bias"},
           {R"({"model_type": "llama", "layer_types": ["sliding_attention"]})", "layer_types"},
           {R"({"model_type": "llama", "sliding_window": 128})", "family mistral only"}}) {
    INFO(json);
    CHECK_THROWS_WITH(LlamaConfig::from_hf_json_string(json, "c.json"), Contains("c.json") && Contains(says));
  }
  CHECK_THROWS_WITH(LlamaConfig::from_hf_json_string(R"({"model_type": "llama", "hidden_act": "gelu"})", "c.json"),
                    Contains("hidden_act"));
  CHECK_THROWS_WITH(LlamaConfig::from_hf_json_string(R"({"model_type": "llama", "hidden_size": "big"})", "c.json"),
                    Contains("'hidden_size' has the wrong type"));
  CHECK_THROWS_WITH(LlamaConfig::from_hf_json_string("{not json", "c.json"), Contains("c.json: invalid JSON"));
}
