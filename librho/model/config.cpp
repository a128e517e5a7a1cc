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

#include "librho/util/enum_names.h"
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
      {"attention_bias", nullptr, &c.attention_bias},  // config.json: read per family below
      {"mlp_bias", nullptr, &c.mlp_bias},
      {"rope_factor", nullptr, &c.rope_factor},        // config.json: inside rope_scaling
      {"rope_low_freq_factor", nullptr, &c.rope_low_freq_factor},
      {"rope_high_freq_factor", nullptr, &c.rope_high_freq_factor},
      {"rope_original_max_position_embeddings", nullptr, &c.rope_original_max_position_embeddings},
      {"bos_token_id", "bos_token_id", &c.bos_token_id},
      {"eos_token_id", "eos_token_id", &c.eos_token_id},
      {"initializer_range", "initializer_range", &c.initializer_range},
  };
}

// config.json keys that change nothing librho computes: metadata, generation settings, special-token ids it does
// not use, framework switches. Accepted silently, as transformers does.
const std::set<std::string> kHfIgnored = {
    "architectures", "model_type", "torch_dtype", "dtype", "transformers_version", "use_cache", "pad_token_id",
    "unk_token_id", "sep_token_id", "cls_token_id", "mask_token_id", "decoder_start_token_id", "output_attentions",
    "output_hidden_states", "return_dict", "tokenizer_class", "is_decoder", "is_encoder_decoder", "id2label",
    "label2id", "problem_type", "torchscript", "use_return_dict", "attn_implementation", "is_llama_config",
    "transformers.js_config", "chunk_size_feed_forward", "add_cross_attention", "cross_attention_hidden_size",
    "tie_encoder_decoder", "prefix", "task_specific_params", "finetuning_task", "pruned_heads", "tf_legacy_loss",
    "use_bfloat16", "max_length", "min_length", "do_sample", "early_stopping", "num_beams", "num_beam_groups",
    "diversity_penalty", "temperature", "top_k", "top_p", "typical_p", "repetition_penalty", "length_penalty",
    "no_repeat_ngram_size", "encoder_no_repeat_ngram_size", "bad_words_ids", "num_return_sequences",
    "output_scores", "return_dict_in_generate", "forced_bos_token_id", "forced_eos_token_id",
    "remove_invalid_values", "exponential_decay_length_penalty", "suppress_tokens", "begin_suppress_tokens",
    "output_router_logits", "auto_map"};

const std::pair<ModelFamily, const char*> kFamilies[] = {
    {ModelFamily::Llama, "llama"}, {ModelFamily::Mistral, "mistral"}, {ModelFamily::Qwen2, "qwen2"}};
const std::pair<RopeScaling, const char*> kRopeScalings[] = {
    {RopeScaling::None, "none"}, {RopeScaling::Linear, "linear"}, {RopeScaling::Llama3, "llama3"}};

template <class E, size_t N>
E enum_of(const std::pair<E, const char*> (&table)[N], const std::string& name, const std::string& where) {
  if (const auto e = enum_from_name(table, name)) return *e;
  throw Error(fmt::format("{} '{}' is not supported (supported: {})", where, name, enum_names(table)));
}

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
  const int64_t attn_bias = (qkv_bias() ? num_heads * d + 2 * num_kv_heads * d : 0) + (o_bias() ? h : 0);
  const int64_t mlp = 3 * h * intermediate_size + (mlp_bias ? 2 * intermediate_size + h : 0);
  const int64_t per_layer = attn + attn_bias + mlp + 2 * h;
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
  if (sliding_window > 0 && family != ModelFamily::Mistral)
    throw Error(fmt::format("{}: a sliding window (sliding_window {}) is implemented for family mistral only", source,
                            sliding_window));
  if ((attention_bias || mlp_bias) && family != ModelFamily::Llama)
    throw Error(fmt::format("{}: attention_bias / mlp_bias belong to family llama (qwen2 has its own q, k, v biases)",
                            source));
  if (rope_scaling != RopeScaling::None && family != ModelFamily::Llama)
    throw Error(fmt::format("{}: rope_scaling is implemented for family llama only", source));
  if (rope_scaling != RopeScaling::None && !(rope_factor > 0))
    throw Error(fmt::format("{}: field 'rope_factor' must be > 0", source));
  if (rope_scaling == RopeScaling::Llama3 &&
      !(rope_low_freq_factor > 0 && rope_high_freq_factor > rope_low_freq_factor &&
        rope_original_max_position_embeddings > 0))
    throw Error(fmt::format("{}: llama3 rope scaling needs 0 < rope_low_freq_factor < rope_high_freq_factor and "
                            "rope_original_max_position_embeddings > 0", source));
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
    if (key == "family" || key == "rope_scaling") {
      const auto where = fmt::format("{}:{}: {}", source, kv.second.Mark().line + 1, key);
      const auto name = yaml_as<std::string>(kv.second, source, key);
      if (key == "family") c.family = enum_of(kFamilies, name, where);
      else c.rope_scaling = enum_of(kRopeScalings, name, where);
      continue;
    }
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

namespace {
bool has_hf(const nlohmann::json& j, const char* key) { return j.contains(key) && !j[key].is_null(); }

// Keys that would change the result: the values librho implements, else refused by name. Biases are read here
// (Llama may have them; the other families must not).
void check_hf_supported(const nlohmann::json& j, const std::string& source, LlamaConfig& c) {
  auto require = [&](const char* key, const nlohmann::json& ok, const char* what) {
    if (has_hf(j, key) && j[key] != ok)
      throw Error(fmt::format("{}: field '{}' = {} is not supported (librho implements {})", source, key,
                              j[key].dump(), what));
  };
  require("hidden_act", "silu", "\"silu\"");
  require("pretraining_tp", 1, "1");
  require("rope_interleaved", false, "false (rotate-half RoPE)");
  require("partial_rotary_factor", 1.0, "1.0 (rotary over the whole head)");
  require("use_sliding_window", false, "false for qwen2 (full attention)");
  if (has_hf(j, "attention_dropout") && j["attention_dropout"] != 0)
    throw Error(fmt::format("{}: field 'attention_dropout' must be 0", source));
  if (has_hf(j, "quantization_config"))
    throw Error(fmt::format("{}: quantized weights (quantization_config) are not supported: give fp32, bf16 or fp16 "
                            "safetensors", source));
  if (has_hf(j, "layer_types"))
    for (const auto& t : j["layer_types"])
      if (t != "full_attention")
        throw Error(fmt::format("{}: layer_types holds {} (librho implements full_attention)", source, t.dump()));
  if (c.family == ModelFamily::Llama) {
    c.attention_bias = j.value("attention_bias", false);
    c.mlp_bias = j.value("mlp_bias", false);
  } else {
    require("attention_bias", false, "no attention_bias for this family");
    require("mlp_bias", false, "false");
  }
}

// RoPE: rope_scaling (transformers 4.x) or rope_parameters (5.x, which also carries rope_theta).
void read_hf_rope(const nlohmann::json& j, const std::string& source, LlamaConfig& c) {
  const char* rope_key = has_hf(j, "rope_parameters") ? "rope_parameters" : "rope_scaling";
  if (!has_hf(j, rope_key)) return;
  const auto& r = j[rope_key];
  if (!r.is_object()) throw Error(fmt::format("{}: field '{}' must be an object", source, rope_key));
  const std::string type = r.value("rope_type", r.value("type", std::string("default")));
  c.rope_scaling = type == "default" ? RopeScaling::None
                                     : enum_of(kRopeScalings, type, fmt::format("{}: {}.rope_type", source, rope_key));
  if (r.contains("rope_theta")) c.rope_theta = r["rope_theta"].get<double>();
  c.rope_factor = r.value("factor", 1.0);
  c.rope_low_freq_factor = r.value("low_freq_factor", 1.0);
  c.rope_high_freq_factor = r.value("high_freq_factor", 4.0);
  c.rope_original_max_position_embeddings = r.value("original_max_position_embeddings", int64_t(8192));
  static const std::set<std::string> known = {"rope_type",       "type",
                                              "rope_theta",      "factor",
                                              "low_freq_factor", "high_freq_factor",
                                              "original_max_position_embeddings"};
  for (auto& [k, v] : r.items())
    if (!known.count(k)) throw Error(fmt::format("{}: {}.{} is not supported", source, rope_key, k));
}

// The fields of the table (fields_of) by their Hugging Face names, type-checked; keys neither in the table nor
// handled above nor ignored (kHfIgnored) are listed in `unknown`.
void read_hf_fields(const nlohmann::json& j, const std::string& source, LlamaConfig& c,
                    std::vector<std::string>* unknown) {
  static const std::set<std::string> handled = {
      "hidden_act", "pretraining_tp", "rope_interleaved", "partial_rotary_factor", "use_sliding_window",
      "attention_dropout", "quantization_config", "layer_types", "attention_bias", "mlp_bias", "rope_scaling",
      "rope_parameters", "max_window_layers"};
  const bool qwen2_window_off = c.family == ModelFamily::Qwen2;  // use_sliding_window false (required above)
  auto fields = fields_of(c);
  for (auto& [key, value] : j.items()) {
    if (key.rfind('_', 0) == 0 || kHfIgnored.count(key) || handled.count(key)) continue;
    if (key == "sliding_window" && qwen2_window_off) continue;
    auto it = std::find_if(fields.begin(), fields.end(),
                           [&](const Field& f) { return f.hf_name && key == f.hf_name; });
    if (it == fields.end()) {
      if (unknown) unknown->push_back(key);
      continue;
    }
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
}
}  // namespace

LlamaConfig LlamaConfig::from_hf_json_string(const std::string& text, const std::string& source,
                                             std::vector<std::string>* unknown) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    throw Error(fmt::format("{}: invalid JSON: {}", source, e.what()));
  }
  if (!j.is_object()) throw Error(fmt::format("{}: expected a JSON object", source));
  LlamaConfig c;
  c.family = enum_of(kFamilies, j.value("model_type", std::string("(none)")), source + ": model_type");
  c.num_kv_heads = -1;  // defaults to num_heads below, as in transformers
  c.tie_word_embeddings = false;
  c.sliding_window = 0;
  check_hf_supported(j, source, c);
  read_hf_rope(j, source, c);
  read_hf_fields(j, source, c, unknown);
  if (c.num_kv_heads < 0) c.num_kv_heads = c.num_heads;
  c.validate(source);
  return c;
}

LlamaConfig LlamaConfig::from_hf_json_file(const std::string& path, std::vector<std::string>* unknown) {
  return from_hf_json_string(read_text_file(path), path, unknown);
}

std::string LlamaConfig::to_hf_json(const std::string& torch_dtype) const {
  nlohmann::ordered_json j;
  static const char* architectures[] = {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"};
  j["architectures"] = {architectures[static_cast<int>(family)]};
  j["model_type"] = enum_name(kFamilies, family);
  j["hidden_act"] = "silu";
  j["attention_dropout"] = 0.0;
  if (family == ModelFamily::Llama) {
    j["attention_bias"] = attention_bias;
    j["mlp_bias"] = mlp_bias;
    j["pretraining_tp"] = 1;
    if (rope_scaling == RopeScaling::None) {
      j["rope_scaling"] = nullptr;
    } else {
      nlohmann::ordered_json r = {{"rope_type", enum_name(kRopeScalings, rope_scaling)}, {"factor", rope_factor}};
      if (rope_scaling == RopeScaling::Llama3) {
        r["low_freq_factor"] = rope_low_freq_factor;
        r["high_freq_factor"] = rope_high_freq_factor;
        r["original_max_position_embeddings"] = rope_original_max_position_embeddings;
      }
      j["rope_scaling"] = r;
    }
  }
  if (family == ModelFamily::Qwen2) {
    j["use_sliding_window"] = false;
    j["max_window_layers"] = num_layers;
  }
  j["use_cache"] = true;
  j["torch_dtype"] = torch_dtype;
  LlamaConfig copy = *this;
  for (const auto& f : fields_of(copy)) {
    if (!f.hf_name) continue;
    std::visit([&](auto* p) { j[f.hf_name] = *p; }, f.ref);
  }
  j["head_dim"] = head_size();
  if (family != ModelFamily::Mistral) j.erase("sliding_window");
  else if (sliding_window == 0) j["sliding_window"] = nullptr;
  return j.dump(2) + "\n";
}

std::string LlamaConfig::to_yaml() const {
  YAML::Emitter out;
  out << YAML::BeginMap;
  out << YAML::Key << "family" << YAML::Value << enum_name(kFamilies, family);
  out << YAML::Key << "rope_scaling" << YAML::Value << enum_name(kRopeScalings, rope_scaling);
  LlamaConfig copy = *this;
  for (const auto& f : fields_of(copy)) std::visit([&](auto* p) { out << YAML::Key << f.yaml_name << YAML::Value << *p; }, f.ref);
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

}  // namespace rho
