#include "librho/model/config.h"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <variant>
#include <vector>

#include "librho/util/error.h"
#include "librho/util/files.h"

namespace rho {
namespace {

using FieldRef = std::variant<int64_t*, double*, bool*>;
struct Field {
  const char* yaml_name;
  const char* hf_name;  // nullptr: not part of config.json
  FieldRef ref;
};

// The one list of fields: YAML keys, config.json keys, and where each lands.
std::vector<Field> fields_of(LlamaConfig& c) {
  return {
      {"vocab_size", "vocab_size", &c.vocab_size},
      {"hidden_size", "hidden_size", &c.hidden_size},
      {"intermediate_size", "intermediate_size", &c.intermediate_size},
      {"num_layers", "num_hidden_layers", &c.num_layers},
      {"num_heads", "num_attention_heads", &c.num_heads},
      {"num_kv_heads", "num_key_value_heads", &c.num_kv_heads},
      {"head_dim", "head_dim", &c.head_dim},
      {"rope_theta", "rope_theta", &c.rope_theta},
      {"rms_norm_eps", "rms_norm_eps", &c.rms_norm_eps},
      {"max_position_embeddings", "max_position_embeddings", &c.max_position_embeddings},
      {"sliding_window", "sliding_window", &c.sliding_window},
      {"tie_word_embeddings", "tie_word_embeddings", &c.tie_word_embeddings},
      {"bos_token_id", "bos_token_id", &c.bos_token_id},
      {"eos_token_id", "eos_token_id", &c.eos_token_id},
      {"initializer_range", "initializer_range", &c.initializer_range},
  };
}

// config.json keys that carry nothing for librho, or that must hold the one value librho implements.
const std::set<std::string> kHfIgnored = {
    "architectures", "model_type", "torch_dtype", "dtype", "transformers_version", "use_cache",
    "pad_token_id", "output_attentions", "output_hidden_states", "return_dict", "tokenizer_class",
    "is_decoder", "id2label", "label2id", "problem_type", "torchscript", "use_return_dict"};

template <class T>
T yaml_as(const YAML::Node& n, const std::string& source, const std::string& key) {
  try {
    return n.as<T>();
  } catch (const YAML::Exception&) {
    throw Error(fmt::format("{}:{}: field '{}' has the wrong type (got '{}')", source, n.Mark().line + 1, key,
                            n.IsScalar() ? n.Scalar() : std::string("non-scalar")));
  }
}

}  // namespace

int64_t LlamaConfig::num_parameters() const {
  const int64_t h = hidden_size, d = head_size();
  const int64_t attn = h * num_heads * d + 2 * h * num_kv_heads * d + num_heads * d * h;
  const int64_t mlp = 3 * h * intermediate_size;
  const int64_t per_layer = attn + mlp + 2 * h;
  return vocab_size * h * (tie_word_embeddings ? 1 : 2) + num_layers * per_layer + h;
}

void LlamaConfig::validate(const std::string& source) const {
  auto positive = [&](const char* name, int64_t v) {
    if (v <= 0) throw Error(fmt::format("{}: field '{}' must be positive (got {})", source, name, v));
  };
  positive("vocab_size", vocab_size);
  positive("hidden_size", hidden_size);
  positive("intermediate_size", intermediate_size);
  positive("num_layers", num_layers);
  positive("num_heads", num_heads);
  positive("num_kv_heads", num_kv_heads);
  positive("max_position_embeddings", max_position_embeddings);
  if (head_dim < 0) throw Error(fmt::format("{}: field 'head_dim' must be >= 0 (got {})", source, head_dim));
  if (head_dim == 0 && hidden_size % num_heads != 0)
    throw Error(fmt::format("{}: hidden_size {} is not divisible by num_heads {}", source, hidden_size, num_heads));
  if (num_heads % num_kv_heads != 0)
    throw Error(fmt::format("{}: num_heads {} is not a multiple of num_kv_heads {}", source, num_heads,
                            num_kv_heads));
  if (head_size() % 2 != 0)
    throw Error(fmt::format("{}: the head size {} must be even for rotary embeddings", source, head_size()));
  if (!(rope_theta > 0)) throw Error(fmt::format("{}: field 'rope_theta' must be > 0", source));
  if (!(rms_norm_eps > 0)) throw Error(fmt::format("{}: field 'rms_norm_eps' must be > 0", source));
  if (sliding_window < 0) throw Error(fmt::format("{}: field 'sliding_window' must be >= 0", source));
  if (bos_token_id < 0 || bos_token_id >= vocab_size || eos_token_id < 0 || eos_token_id >= vocab_size)
    throw Error(fmt::format("{}: bos/eos token ids ({}, {}) must lie in [0, vocab_size={})", source, bos_token_id,
                            eos_token_id, vocab_size));
}

LlamaConfig LlamaConfig::from_yaml_string(const std::string& text, const std::string& source) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw Error(fmt::format("{}:{}: invalid YAML: {}", source, e.mark.line + 1, e.msg));
  }
  if (root.IsMap() && root["model"]) root = root["model"];
  if (!root.IsMap()) throw Error(fmt::format("{}: expected a mapping of model fields", source));
  LlamaConfig c;
  c.num_kv_heads = -1;  // defaults to num_heads below (multi-head attention), as for config.json
  auto fields = fields_of(c);
  for (const auto& kv : root) {
    const auto key = kv.first.as<std::string>();
    auto it = std::find_if(fields.begin(), fields.end(), [&](const Field& f) { return key == f.yaml_name; });
    if (it == fields.end())
      throw Error(fmt::format("{}:{}: unknown model field '{}'", source, kv.first.Mark().line + 1, key));
    std::visit([&](auto* p) { *p = yaml_as<std::remove_pointer_t<decltype(p)>>(kv.second, source, key); }, it->ref);
  }
  if (c.num_kv_heads < 0) c.num_kv_heads = c.num_heads;
  c.validate(source);
  return c;
}

LlamaConfig LlamaConfig::from_yaml_file(const std::string& path) {
  return from_yaml_string(read_text_file(path), path);
}

LlamaConfig LlamaConfig::from_hf_json_string(const std::string& text, const std::string& source) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    throw Error(fmt::format("{}: invalid JSON: {}", source, e.what()));
  }
  if (!j.is_object()) throw Error(fmt::format("{}: expected a JSON object", source));
  const std::string model_type = j.value("model_type", "");
  if (model_type != "llama" && model_type != "mistral")
    throw Error(fmt::format("{}: model_type '{}' is not supported (llama, mistral)", source, model_type));

  auto require = [&](const char* key, const nlohmann::json& ok, const char* what) {
    if (j.contains(key) && !j[key].is_null() && j[key] != ok)
      throw Error(fmt::format("{}: field '{}' = {} is not supported (librho implements {})", source, key,
                              j[key].dump(), what));
  };
  require("hidden_act", "silu", "\"silu\"");
  require("attention_bias", false, "false");
  require("mlp_bias", false, "false");
  require("pretraining_tp", 1, "1");
  if (j.contains("attention_dropout") && j["attention_dropout"].is_number() && j["attention_dropout"] != 0)
    throw Error(fmt::format("{}: field 'attention_dropout' must be 0", source));
  if (j.contains("rope_scaling") && !j["rope_scaling"].is_null())
    throw Error(fmt::format("{}: field 'rope_scaling' = {} is not supported (plain RoPE only)", source,
                            j["rope_scaling"].dump()));

  LlamaConfig c;
  c.num_kv_heads = -1;  // defaults to num_heads below, as in transformers
  c.tie_word_embeddings = false;
  c.sliding_window = 0;
  auto fields = fields_of(c);
  for (auto& [key, value] : j.items()) {
    if (key.rfind('_', 0) == 0 || kHfIgnored.count(key) || key == "hidden_act" || key == "attention_bias" ||
        key == "mlp_bias" || key == "pretraining_tp" || key == "attention_dropout" || key == "rope_scaling")
      continue;
    auto it = std::find_if(fields.begin(), fields.end(),
                           [&](const Field& f) { return f.hf_name && key == f.hf_name; });
    if (it == fields.end()) throw Error(fmt::format("{}: unknown config.json field '{}'", source, key));
    if (value.is_null()) continue;  // e.g. "sliding_window": null, "head_dim": null
    nlohmann::json v = value;
    if (v.is_array() && !v.empty()) v = v[0];  // eos_token_id may list several ids: the first is the document end
    std::visit(
        [&](auto* p) {
          using T = std::remove_pointer_t<decltype(p)>;
          const bool ok = std::is_same_v<T, bool> ? v.is_boolean() : v.is_number();
          if (!ok) throw Error(fmt::format("{}: field '{}' has the wrong type (got {})", source, key, value.dump()));
          *p = v.get<T>();
        },
        it->ref);
  }
  if (c.num_kv_heads < 0) c.num_kv_heads = c.num_heads;
  c.validate(source);
  return c;
}

LlamaConfig LlamaConfig::from_hf_json_file(const std::string& path) {
  return from_hf_json_string(read_text_file(path), path);
}

std::string LlamaConfig::to_hf_json(const std::string& torch_dtype) const {
  nlohmann::ordered_json j;
  j["architectures"] = {"LlamaForCausalLM"};
  j["model_type"] = "llama";
  j["hidden_act"] = "silu";
  j["attention_bias"] = false;
  j["mlp_bias"] = false;
  j["attention_dropout"] = 0.0;
  j["pretraining_tp"] = 1;
  j["rope_scaling"] = nullptr;
  j["use_cache"] = true;
  j["torch_dtype"] = torch_dtype;
  LlamaConfig copy = *this;
  for (const auto& f : fields_of(copy)) {
    if (!f.hf_name) continue;
    std::visit([&](auto* p) { j[f.hf_name] = *p; }, f.ref);
  }
  j["head_dim"] = head_size();
  if (sliding_window == 0) j["sliding_window"] = nullptr;
  return j.dump(2) + "\n";
}

std::string LlamaConfig::to_yaml() const {
  YAML::Emitter out;
  out << YAML::BeginMap;
  LlamaConfig copy = *this;
  for (const auto& f : fields_of(copy)) std::visit([&](auto* p) { out << YAML::Key << f.yaml_name << YAML::Value << *p; }, f.ref);
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

}  // namespace rho
