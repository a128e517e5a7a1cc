#include "librho/train/config.h"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>

#include "librho/util/error.h"
#include "librho/util/files.h"

namespace rho {
namespace {

// "file:line" of a node, or "file (--set)" for a value that came from a command-line override.
std::string where(const std::string& source, const YAML::Node& node) {
  const auto mark = node.Mark();
  return mark.is_null() ? source + " (--set)" : fmt::format("{}:{}", source, mark.line + 1);
}

// yaml-cpp keeps the first of two equal keys silently; a config with both is a mistake worth an error.
void reject_duplicates(const YAML::Node& map, const std::string& source, const std::string& prefix) {
  if (!map || !map.IsMap()) return;
  std::set<std::string> keys;
  for (const auto& kv : map)
    if (!keys.insert(kv.first.as<std::string>()).second)
      throw Error(fmt::format("{}: duplicate key '{}{}'", where(source, kv.first), prefix,
                              kv.first.as<std::string>()));
}

// One YAML mapping being read: remembers which keys were read so the rest can be reported as unknown.
class Section {
 public:
  Section(YAML::Node node, std::string source, std::string path) : node_(node), source_(std::move(source)), path_(std::move(path)) {
    if (node_ && !node_.IsNull() && !node_.IsMap())
      throw Error(fmt::format("{}: '{}' must be a mapping", where(source_, node_), path_));
    reject_duplicates(node_, source_, path_ + ".");
  }
  template <class T>
  void read(const char* key, T& out) {
    seen_.insert(key);
    if (!node_ || !node_[key]) return;
    const YAML::Node v = node_[key];
    try {
      out = v.as<T>();
    } catch (const YAML::Exception&) {
      throw Error(fmt::format("{}: '{}.{}' has the wrong type (got '{}')", where(source_, v), path_, key,
                              v.IsScalar() ? v.Scalar() : "a non-scalar"));
    }
  }
  // A string or a list of strings.
  void read_list(const char* key, std::vector<std::string>& out) {
    seen_.insert(key);
    if (!node_ || !node_[key]) return;
    const YAML::Node v = node_[key];
    try {
      if (v.IsSequence()) {
        out = v.as<std::vector<std::string>>();
      } else if (!v.IsNull() && !v.as<std::string>().empty()) {
        out = {v.as<std::string>()};
      }
    } catch (const YAML::Exception&) {
      throw Error(fmt::format("{}: '{}.{}' must be a string or a list of strings", where(source_, v), path_,
                              key));
    }
  }
  YAML::Node child(const char* key) {
    seen_.insert(key);
    return node_ ? node_[key] : YAML::Node();
  }
  bool has(const char* key) const { return node_ && node_[key]; }
  // Where `key`'s value was written, for messages.
  std::string where_is(const char* key) const {
    return node_ && node_[key] ? where(source_, node_[key]) : source_;
  }
  void finish() const {
    if (!node_ || !node_.IsMap()) return;
    for (const auto& kv : node_) {
      const auto k = kv.first.as<std::string>();
      if (!seen_.count(k))
        throw Error(fmt::format("{}: unknown key '{}.{}'", where(source_, kv.first), path_, k));
    }
  }

 private:
  YAML::Node node_;
  std::string source_, path_;
  std::set<std::string> seen_;
};

// A copy of a parsed value built node by node: it has no position in any file, so errors about it say
// "(--set)" rather than the line of the one-line document the value was parsed from.
YAML::Node without_marks(const YAML::Node& n) {
  if (n.IsSequence()) {
    YAML::Node out(YAML::NodeType::Sequence);
    for (const auto& item : n) out.push_back(without_marks(item));
    return out;
  }
  if (n.IsMap()) {
    YAML::Node out(YAML::NodeType::Map);
    for (const auto& kv : n) out[kv.first.as<std::string>()] = without_marks(kv.second);
    return out;
  }
  return n.IsScalar() ? YAML::Node(n.Scalar()) : YAML::Node();
}

void apply_override(YAML::Node& root, const std::string& item) {
  const auto eq = item.find('=');
  const auto dot = item.find('.');
  if (eq == std::string::npos || dot == std::string::npos || dot > eq)
    throw Error(fmt::format("override '{}' is not of the form section.key=value", item));
  const auto section = item.substr(0, dot), key = item.substr(dot + 1, eq - dot - 1), value = item.substr(eq + 1);
  YAML::Node parsed;
  try {
    parsed = YAML::Load(value);
  } catch (const YAML::Exception& e) {
    throw Error(fmt::format("override '{}': invalid value ({})", item, e.msg));
  }
  root[section][key] = without_marks(parsed);
}

// `key` is "section.name"; the message points at the line that set it.
template <class T>
void require(bool ok, const Section& s, const char* key, const T& value, const char* what) {
  if (ok) return;
  const char* dot = std::strchr(key, '.');
  throw Error(fmt::format("{}: '{}' = {} is out of range: {}", s.where_is(dot ? dot + 1 : key), key, value, what));
}

}  // namespace

namespace {
// A file a config names: relative paths are taken beside the YAML file that names it when that file exists there
// (configs/train/slm.yaml can say `config: ../model/tiny.yaml`), else relative to the working directory.
std::string beside(const std::string& file, const std::string& yaml_source) {
  namespace fs = std::filesystem;
  const fs::path p(file);
  if (p.is_absolute()) return file;
  std::error_code ec;
  if (fs::is_regular_file(yaml_source, ec)) {
    const auto there = fs::path(yaml_source).parent_path() / p;
    if (fs::exists(there, ec)) return there.lexically_normal().string();
  }
  return file;
}
}  // namespace

TrainConfig TrainConfig::from_yaml_string(const std::string& text, const std::string& source,
                                          const std::vector<std::string>& overrides) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw Error(fmt::format("{}:{}: invalid YAML: {}", source, e.mark.line + 1, e.msg));
  }
  if (!root || root.IsNull()) root = YAML::Node(YAML::NodeType::Map);
  if (!root.IsMap()) throw Error(fmt::format("{}: expected a mapping of sections", source));
  reject_duplicates(root, source, "");
  reject_duplicates(root["model"], source, "model.");
  for (const auto& o : overrides) apply_override(root, o);
  TrainConfig c;
  const std::set<std::string> sections = {"run", "model", "data", "optim", "train", "slm"};
  for (const auto& kv : root)
    if (!sections.count(kv.first.as<std::string>()))
      throw Error(fmt::format("{}: unknown section '{}' (run, model, data, optim, train, slm)", where(source, kv.first),
                              kv.first.as<std::string>()));

  Section run(root["run"], source, "run");
  run.read("out_dir", c.out_dir);
  run.read("seed", c.seed);
  run.read("device", c.device);
  run.read("dist_timeout", c.dist_timeout);
  run.finish();
  require(c.device == "auto" || c.device == "cpu" || c.device == "cuda", run, "run.device", c.device, "auto|cpu|cuda");
  require(c.dist_timeout > 0, run, "run.dist_timeout", c.dist_timeout, "must be > 0 (seconds)");

  // model: either `config: file.yaml` or inline model fields, plus an optional `init_from` HF directory.
  YAML::Node model = root["model"] ? YAML::Clone(root["model"]) : YAML::Node(YAML::NodeType::Map);
  if (!model.IsMap()) throw Error(fmt::format("{}: 'model' must be a mapping", source));
  if (model["init_from"]) {
    c.init_from = model["init_from"].as<std::string>();
    model.remove("init_from");
  }
  if (model["config"]) {
    const auto file = model["config"].as<std::string>();
    model.remove("config");
    if (model.size() > 0) throw Error(fmt::format("{}: model: give either 'config' or inline fields, not both", source));
    c.model = LlamaConfig::from_yaml_file(beside(file, source));
  } else if (model.size() > 0) {
    if (!c.init_from.empty())
      throw Error(fmt::format("{}: model: 'init_from' takes the shape from its config.json; drop the inline fields", source));
    YAML::Emitter e;
    e << model;
    c.model = LlamaConfig::from_yaml_string(e.c_str(), source + " (model)");
  } else if (c.init_from.empty()) {
    throw Error(fmt::format("{}: the 'model' section needs 'config', inline fields or 'init_from'", source));
  }

  Section data(root["data"], source, "data");
  data.read("train", c.train_data);
  data.read("seq_len", c.seq_len);
  data.read("batch_size", c.batch_size);
  data.read("grad_accum", c.grad_accum);
  data.read("exclude_boundary", c.exclude_boundary);
  data.read("eval_every", c.eval_every);
  data.read("eval_batches", c.eval_batches);
  if (YAML::Node ev = data.child("eval")) {
    if (!ev.IsMap()) throw Error(fmt::format("{}: 'data.eval' must map names to token datasets", where(source, ev)));
    for (const auto& kv : ev) c.eval_sets.push_back({kv.first.as<std::string>(), kv.second.as<std::string>()});
  }
  data.finish();
  if (c.train_data.empty()) throw Error(fmt::format("{}: 'data.train' is required", source));
  require(c.seq_len > 0, data, "data.seq_len", c.seq_len, "must be > 0");
  require(c.batch_size > 0, data, "data.batch_size", c.batch_size, "must be > 0");
  require(c.grad_accum > 0, data, "data.grad_accum", c.grad_accum, "must be > 0");
  require(c.eval_batches > 0, data, "data.eval_batches", c.eval_batches, "must be > 0");

  Section optim(root["optim"], source, "optim");
  optim.read("lr", c.lr);
  optim.read("min_lr", c.min_lr);
  optim.read("weight_decay", c.weight_decay);
  optim.read("beta1", c.beta1);
  optim.read("beta2", c.beta2);
  optim.read("eps", c.eps);
  optim.read("grad_clip", c.grad_clip);
  optim.read("warmup_steps", c.warmup_steps);
  optim.read("max_steps", c.max_steps);
  optim.read("schedule", c.schedule);
  optim.read("decay_norms_and_embeddings", c.decay_norms_and_embeddings);
  optim.finish();
  require(c.lr > 0, optim, "optim.lr", c.lr, "must be > 0");
  require(c.min_lr >= 0 && c.min_lr <= c.lr, optim, "optim.min_lr", c.min_lr, "must lie in [0, lr]");
  require(c.weight_decay >= 0, optim, "optim.weight_decay", c.weight_decay, "must be >= 0");
  require(c.beta1 >= 0 && c.beta1 < 1, optim, "optim.beta1", c.beta1, "must lie in [0, 1)");
  require(c.beta2 >= 0 && c.beta2 < 1, optim, "optim.beta2", c.beta2, "must lie in [0, 1)");
  require(c.eps > 0, optim, "optim.eps", c.eps, "must be > 0");
  require(c.grad_clip >= 0, optim, "optim.grad_clip", c.grad_clip, "must be >= 0 (0 disables)");
  require(c.max_steps > 0, optim, "optim.max_steps", c.max_steps, "must be > 0");
  require(c.warmup_steps >= 0, optim, "optim.warmup_steps", c.warmup_steps, "must be >= 0");
  require(c.schedule == "cosine" || c.schedule == "linear" || c.schedule == "constant", optim, "optim.schedule",
          c.schedule, "cosine|linear|constant");

  Section train(root["train"], source, "train");
  train.read("stage", c.stage);
  train.read("precision", c.precision);
  train.read("activation_checkpointing", c.activation_checkpointing);
  train.read("log_every", c.log_every);
  train.read("checkpoint_every", c.checkpoint_every);
  train.read("keep_checkpoints", c.keep_checkpoints);
  train.read("nan_policy", c.nan_policy);
  train.read("export_hf", c.export_hf);
  train.read("zero1", c.zero1);
  train.read("bucket_mb", c.bucket_mb);
  train.finish();
  require(c.stage == "clm" || c.stage == "slm", train, "train.stage", c.stage, "clm|slm");
  require(c.precision == "auto" || c.precision == "fp32" || c.precision == "bf16", train, "train.precision",
          c.precision, "auto|fp32|bf16");
  require(c.nan_policy == "stop" || c.nan_policy == "skip", train, "train.nan_policy", c.nan_policy, "stop|skip");
  require(c.log_every > 0, train, "train.log_every", c.log_every, "must be > 0");
  require(c.checkpoint_every > 0, train, "train.checkpoint_every", c.checkpoint_every, "must be > 0");
  require(c.keep_checkpoints > 0, train, "train.keep_checkpoints", c.keep_checkpoints, "must be > 0");
  require(c.bucket_mb > 0, train, "train.bucket_mb", c.bucket_mb, "must be > 0");

  Section slm(root["slm"], source, "slm");
  std::string rule = to_string(c.slm.rule), scope = to_string(c.slm.scope), weighting = to_string(c.slm.weighting);
  std::string combine = to_string(c.reference_combine);
  double start_fraction = 0;
  slm.read("ratio", c.slm.ratio);
  slm.read("ratio_end", c.slm.ratio_end);
  slm.read("ratio_steps", c.slm.ratio_steps);
  slm.read("rule", rule);
  slm.read("scope", scope);
  slm.read("weighting", weighting);
  slm.read("temperature", c.slm.temperature);
  slm.read("weight_clip", c.slm.weight_clip);
  slm.read("seed", c.slm.seed);
  slm.read_list("reference_losses", c.reference_losses);
  slm.read_list("reference_model", c.reference_model);
  slm.read("reference_combine", combine);
  slm.read("self_reference", c.self_reference);
  slm.read("ema_decay", c.ema_decay);
  slm.read("start_step", c.slm_start_step);
  slm.read("start_fraction", start_fraction);
  slm.finish();
  c.slm.rule = parse_selection_rule(rule);
  c.slm.scope = parse_selection_scope(scope);
  c.slm.weighting = parse_weighting(weighting);
  c.reference_combine = parse_reference_combine(combine);
  require(c.slm.ratio > 0 && c.slm.ratio <= 1, slm, "slm.ratio", c.slm.ratio, "must lie in (0, 1]");
  require(c.slm.ratio_end < 0 || c.slm.ratio_end <= 1, slm, "slm.ratio_end", c.slm.ratio_end, "must be <= 1");
  require(c.slm.temperature > 0, slm, "slm.temperature", c.slm.temperature, "must be > 0");
  require(c.slm.weight_clip > 0, slm, "slm.weight_clip", c.slm.weight_clip, "must be > 0");
  require(c.self_reference == "none" || c.self_reference == "frozen" || c.self_reference == "ema", slm,
          "slm.self_reference", c.self_reference, "none|frozen|ema");
  require(c.ema_decay >= 0 && c.ema_decay < 1, slm, "slm.ema_decay", c.ema_decay, "must lie in [0, 1)");
  require(c.slm_start_step >= 0, slm, "slm.start_step", c.slm_start_step, "must be >= 0");
  require(start_fraction >= 0 && start_fraction < 1, slm, "slm.start_fraction", start_fraction, "must lie in [0, 1)");
  if (start_fraction > 0) {
    if (slm.has("start_step"))
      throw Error(fmt::format("{}: give slm.start_step or slm.start_fraction, not both", slm.where_is("start_step")));
    c.slm_start_step = static_cast<int64_t>(std::llround(start_fraction * static_cast<double>(c.max_steps)));
  }
  const int kinds = !c.reference_losses.empty() + !c.reference_model.empty() + (c.self_reference != "none");
  if (c.stage == "slm" && c.slm.rule != SelectionRule::Current && c.slm.rule != SelectionRule::Random && kinds != 1)
    throw Error(fmt::format("{}: stage slm with rule '{}' needs exactly one of slm.reference_losses, "
                            "slm.reference_model and slm.self_reference", source, rule));
  return c;
}

TrainConfig TrainConfig::from_yaml_file(const std::string& path, const std::vector<std::string>& overrides) {
  return from_yaml_string(read_text_file(path), path, overrides);
}

std::string TrainConfig::to_yaml() const {
  YAML::Emitter o;
  o << YAML::BeginMap;
  o << YAML::Key << "run" << YAML::Value << YAML::BeginMap << YAML::Key << "out_dir" << YAML::Value << out_dir
    << YAML::Key << "seed" << YAML::Value << seed << YAML::Key << "device" << YAML::Value << device << YAML::Key
    << "dist_timeout" << YAML::Value << dist_timeout << YAML::EndMap;
  // A run started from a Hugging Face directory takes its shape from there: only init_from is written.
  if (init_from.empty()) {
    o << YAML::Key << "model" << YAML::Value << YAML::Load(model.to_yaml());
  } else {
    o << YAML::Key << "model" << YAML::Value << YAML::BeginMap << YAML::Key << "init_from" << YAML::Value << init_from
      << YAML::EndMap;
  }
  o << YAML::Key << "data" << YAML::Value << YAML::BeginMap << YAML::Key << "train" << YAML::Value << train_data
    << YAML::Key << "seq_len" << YAML::Value << seq_len << YAML::Key << "batch_size" << YAML::Value << batch_size
    << YAML::Key << "grad_accum" << YAML::Value << grad_accum << YAML::Key << "exclude_boundary" << YAML::Value
    << exclude_boundary << YAML::Key << "eval_every" << YAML::Value << eval_every << YAML::Key << "eval_batches"
    << YAML::Value << eval_batches;
  if (!eval_sets.empty()) {
    o << YAML::Key << "eval" << YAML::Value << YAML::BeginMap;
    for (const auto& e : eval_sets) o << YAML::Key << e.name << YAML::Value << e.path;
    o << YAML::EndMap;
  }
  o << YAML::EndMap;
  o << YAML::Key << "optim" << YAML::Value << YAML::BeginMap << YAML::Key << "lr" << YAML::Value << lr << YAML::Key
    << "min_lr" << YAML::Value << min_lr << YAML::Key << "weight_decay" << YAML::Value << weight_decay << YAML::Key
    << "beta1" << YAML::Value << beta1 << YAML::Key << "beta2" << YAML::Value << beta2 << YAML::Key << "eps"
    << YAML::Value << eps << YAML::Key << "grad_clip" << YAML::Value << grad_clip << YAML::Key << "warmup_steps"
    << YAML::Value << warmup_steps << YAML::Key << "max_steps" << YAML::Value << max_steps << YAML::Key << "schedule"
    << YAML::Value << schedule << YAML::Key << "decay_norms_and_embeddings" << YAML::Value
    << decay_norms_and_embeddings << YAML::EndMap;
  o << YAML::Key << "train" << YAML::Value << YAML::BeginMap << YAML::Key << "stage" << YAML::Value << stage
    << YAML::Key << "precision" << YAML::Value << precision << YAML::Key << "activation_checkpointing" << YAML::Value
    << activation_checkpointing << YAML::Key << "log_every" << YAML::Value << log_every << YAML::Key
    << "checkpoint_every" << YAML::Value << checkpoint_every << YAML::Key << "keep_checkpoints" << YAML::Value
    << keep_checkpoints << YAML::Key << "nan_policy" << YAML::Value << nan_policy << YAML::Key << "export_hf"
    << YAML::Value << export_hf << YAML::Key << "zero1" << YAML::Value << zero1 << YAML::Key << "bucket_mb"
    << YAML::Value << bucket_mb << YAML::EndMap;
  o << YAML::Key << "slm" << YAML::Value << YAML::BeginMap << YAML::Key << "ratio" << YAML::Value << slm.ratio
    << YAML::Key << "ratio_end" << YAML::Value << slm.ratio_end << YAML::Key << "ratio_steps" << YAML::Value
    << slm.ratio_steps << YAML::Key << "rule" << YAML::Value << to_string(slm.rule) << YAML::Key << "scope"
    << YAML::Value << to_string(slm.scope) << YAML::Key << "weighting" << YAML::Value << to_string(slm.weighting)
    << YAML::Key << "temperature" << YAML::Value << slm.temperature << YAML::Key << "weight_clip" << YAML::Value
    << slm.weight_clip << YAML::Key << "seed" << YAML::Value << slm.seed << YAML::Key << "reference_losses"
    << YAML::Value << YAML::Flow << reference_losses << YAML::Key << "reference_model" << YAML::Value << YAML::Flow
    << reference_model << YAML::Key << "reference_combine" << YAML::Value << to_string(reference_combine)
    << YAML::Key << "self_reference" << YAML::Value << self_reference << YAML::Key << "ema_decay" << YAML::Value
    << ema_decay << YAML::Key << "start_step" << YAML::Value << slm_start_step << YAML::EndMap;
  o << YAML::EndMap;
  return std::string(o.c_str()) + "\n";
}

namespace {
// "section.key" -> the value as YAML text, for every leaf under the top-level sections.
void flatten(const YAML::Node& node, const std::string& prefix, std::map<std::string, std::string>& out) {
  if (node.IsMap()) {
    for (const auto& kv : node) flatten(kv.second, prefix.empty() ? kv.first.as<std::string>()
                                                                   : prefix + "." + kv.first.as<std::string>(), out);
    return;
  }
  if (node.IsScalar()) {  // numbers in their shortest form (the emitter writes 0.6 as 0.59999999999999998)
    const auto& text = node.Scalar();
    char* end = nullptr;
    const double d = std::strtod(text.c_str(), &end);
    out[prefix] = !text.empty() && end && *end == '\0' ? fmt::format("{}", d) : text;
    return;
  }
  YAML::Emitter e;
  e << YAML::Flow << node;
  out[prefix] = e.c_str();
}
}  // namespace

std::vector<TrainConfig::Change> TrainConfig::differences(const std::string& other_yaml) const {
  std::map<std::string, std::string> mine, theirs;
  flatten(YAML::Load(to_yaml()), "", mine);
  flatten(YAML::Load(other_yaml), "", theirs);
  std::vector<Change> out;
  for (const auto& [k, v] : theirs) {
    const auto it = mine.find(k);
    if (it == mine.end() || it->second != v) out.push_back({k, v, it == mine.end() ? "" : it->second});
  }
  for (const auto& [k, v] : mine)
    if (!theirs.count(k)) out.push_back({k, "", v});
  return out;
}

bool TrainConfig::resume_safe(const std::string& key) {
  static const std::set<std::string> safe = {
      "run.out_dir",     "run.dist_timeout",       "data.eval_every",        "data.eval_batches",
      "train.log_every", "train.checkpoint_every", "train.keep_checkpoints", "train.export_hf",
      "train.bucket_mb"};  // gradient buckets change when sums happen, not what they are
  return safe.count(key) > 0 || key.rfind("data.eval.", 0) == 0;
}

double TrainConfig::lr_at(int64_t step) const {
  if (step < warmup_steps) return lr * static_cast<double>(step + 1) / static_cast<double>(warmup_steps);
  if (schedule == "constant") return lr;
  const double span = std::max<int64_t>(max_steps - warmup_steps, 1);
  const double t = std::min(1.0, static_cast<double>(step - warmup_steps) / span);
  const double f = schedule == "cosine" ? 0.5 * (1.0 + std::cos(M_PI * t)) : 1.0 - t;
  return min_lr + (lr - min_lr) * f;
}

}  // namespace rho
