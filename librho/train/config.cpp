#include "librho/train/config.h"

#include <fmt/format.h>

#include <algorithm>
#include <fmt/ranges.h>
#include <yaml-cpp/yaml.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <set>
#include <type_traits>

#include "librho/util/enum_names.h"
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
      if (seen_.count(k)) continue;
      const std::string hint = path_ + "." + k == "train.zero1" ? " (it became train.sharding: optimizer)" : "";
      throw Error(fmt::format("{}: unknown key '{}.{}'{}", where(source_, kv.first), path_, k, hint));
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

namespace {
constexpr std::pair<Stage, const char*> kStageNames[] = {{Stage::Clm, "clm"}, {Stage::Slm, "slm"}};
constexpr std::pair<Precision, const char*> kPrecisionNames[] = {
    {Precision::Auto, "auto"}, {Precision::Fp32, "fp32"}, {Precision::Bf16, "bf16"}};
constexpr std::pair<NanPolicy, const char*> kNanPolicyNames[] = {{NanPolicy::Stop, "stop"}, {NanPolicy::Skip, "skip"}};

// A number as the docs and messages show it: the shortest form that reads back the same.
template <class T>
std::string show(const T& v) {
  if constexpr (std::is_same_v<T, bool>) return v ? "true" : "false";
  else if constexpr (std::is_same_v<T, std::string>) return v;
  else if constexpr (std::is_same_v<T, std::vector<std::string>>) return v.empty() ? "" : fmt::format("{}", fmt::join(v, ", "));
  else return fmt::format("{}", v);
}

// One key of the config: how it is read, checked and written, and its line in the docs.
struct Key {
  std::string section, name;  // "optim", "lr"
  std::string doc;            // one line for docs/training.md
  bool resume_safe = false;   // never changes what the steps compute: a resumed run may change it
  std::function<void(Section&, TrainConfig&)> read;
  std::function<void(YAML::Emitter&, const TrainConfig&)> write;  // key and value
  std::function<std::string(const TrainConfig&)> check;           // what is wrong ("" when nothing)
  std::function<std::string(const TrainConfig&)> value;           // shown in messages and the docs
  std::string full() const { return section + "." + name; }
};

// A plain value field: `get` returns the field of a TrainConfig (const or not). `ok` (optional) and `what`:
// the range check and its wording.
template <class Get>
Key field(const char* section, const char* name, Get get, std::string doc, bool (*ok)(double) = nullptr,
          const char* what = "") {
  Key k;
  k.section = section;
  k.name = name;
  k.doc = std::move(doc);
  k.read = [get, n = std::string(name)](Section& s, TrainConfig& c) { s.read(n.c_str(), get(c)); };
  k.write = [get, n = std::string(name)](YAML::Emitter& e, const TrainConfig& c) {
    e << YAML::Key << n << YAML::Value;
    if constexpr (std::is_same_v<std::decay_t<decltype(get(c))>, std::vector<std::string>>) e << YAML::Flow;
    e << get(c);
  };
  k.value = [get](const TrainConfig& c) { return show(get(c)); };
  if (ok)
    k.check = [get, ok, w = std::string(what)](const TrainConfig& c) -> std::string {
      if constexpr (std::is_arithmetic_v<std::decay_t<decltype(get(c))>>)
        return ok(static_cast<double>(get(c))) ? "" : w;
      return "";
    };
  return k;
}

// A list field: one string or a list of strings.
template <class Get>
Key list_field(const char* section, const char* name, Get get, std::string doc) {
  Key k = field(section, name, get, std::move(doc));
  k.read = [get, n = std::string(name)](Section& s, TrainConfig& c) { s.read_list(n.c_str(), get(c)); };
  return k;
}

// An enum field named by its table.
template <class Get, class E, size_t N>
Key enum_field(const char* section, const char* name, Get get, const std::pair<E, const char*> (&table)[N],
               std::string doc) {
  Key k;
  k.section = section;
  k.name = name;
  k.doc = enum_names(table) + ": " + std::move(doc);
  k.read = [get, &table, n = std::string(name), full = std::string(section) + "." + name](Section& s, TrainConfig& c) {
    std::string text = enum_name(table, get(c));
    s.read(n.c_str(), text);
    const auto e = enum_from_name(table, text);
    if (!e)
      throw Error(fmt::format("{}: '{}' = {} is not one of {}", s.where_is(n.c_str()), full, text, enum_names(table)));
    get(c) = *e;
  };
  k.write = [get, &table, n = std::string(name)](YAML::Emitter& e, const TrainConfig& c) {
    e << YAML::Key << n << YAML::Value << enum_name(table, get(c));
  };
  k.value = [get, &table](const TrainConfig& c) { return std::string(enum_name(table, get(c))); };
  return k;
}

Key with_check(Key k, std::function<std::string(const TrainConfig&)> check) {
  k.check = std::move(check);
  return k;
}

bool positive(double v) { return v > 0; }
bool non_negative(double v) { return v >= 0; }
bool unit_open(double v) { return v >= 0 && v < 1; }  // [0, 1)
bool ratio_range(double v) { return v > 0 && v <= 1; }
bool ratio_end_range(double v) { return v < 0 || v <= 1; }

#define RHO_GET(expr) [](auto& c) -> auto& { return c.expr; }

// Every key but the model section's (a file, inline fields or init_from) and data.eval (a name -> folder map),
// which from_yaml_string reads by hand. Order: the order of config.yaml and of the docs table.
const std::vector<Key>& keys() {
  static const std::vector<Key> table = [] {
    std::vector<Key> t = {
        field("run", "out_dir", RHO_GET(out_dir), "checkpoints, `log.jsonl`, `config.yaml`, `hf/`"),
        field("run", "seed", RHO_GET(seed), "model initialisation and data order"),
        enum_field("run", "device", RHO_GET(device), kDeviceChoiceNames, "auto is CUDA when present"),
        field("run", "dist_timeout", RHO_GET(dist_timeout),
              "seconds a collective may wait for a peer before the run fails (data parallel)", positive,
              "must be > 0 (seconds)"),
        field("data", "train", RHO_GET(train_data), "token dataset folder (rho_tokenize output)"),
        field("data", "seq_len", RHO_GET(seq_len), "tokens per window (inputs); windows hold seq_len + 1", positive,
              "must be > 0"),
        field("data", "batch_size", RHO_GET(batch_size), "windows per micro-batch (per process)", positive,
              "must be > 0"),
        field("data", "grad_accum", RHO_GET(grad_accum), "micro-batches per optimizer step", positive, "must be > 0"),
        field("data", "exclude_boundary", RHO_GET(exclude_boundary), "no loss on a document's first token"),
        field("data", "eval_every", RHO_GET(eval_every), "steps between evaluations of `data.eval`"),
        field("data", "eval_batches", RHO_GET(eval_batches),
              "batches of the first windows of each eval set (the same tokens every time)", positive, "must be > 0"),
        field("optim", "lr", RHO_GET(lr), "peak learning rate", positive, "must be > 0"),
        with_check(field("optim", "min_lr", RHO_GET(min_lr), "final learning rate, in [0, lr]"),
                   [](const TrainConfig& c) -> std::string {
                     return c.min_lr >= 0 && c.min_lr <= c.lr ? "" : "must lie in [0, lr]";
                   }),
        field("optim", "weight_decay", RHO_GET(weight_decay), "AdamW decoupled weight decay", non_negative,
              "must be >= 0"),
        field("optim", "beta1", RHO_GET(beta1), "AdamW", unit_open, "must lie in [0, 1)"),
        field("optim", "beta2", RHO_GET(beta2), "AdamW", unit_open, "must lie in [0, 1)"),
        field("optim", "eps", RHO_GET(eps), "AdamW", positive, "must be > 0"),
        field("optim", "grad_clip", RHO_GET(grad_clip), "global gradient-norm clip (0: off)", non_negative,
              "must be >= 0 (0 disables)"),
        field("optim", "warmup_steps", RHO_GET(warmup_steps), "linear warmup", non_negative, "must be >= 0"),
        field("optim", "max_steps", RHO_GET(max_steps), "optimizer steps", positive, "must be > 0"),
        enum_field("optim", "schedule", RHO_GET(schedule), kScheduleNames, "after warmup, down to min_lr"),
        field("optim", "decay_norms_and_embeddings", RHO_GET(decay_norms_and_embeddings),
              "by default norms and embeddings get no weight decay"),
        enum_field("train", "stage", RHO_GET(stage), kStageNames, "reference training (plain CLM) or selective"),
        enum_field("train", "precision", RHO_GET(precision), kPrecisionNames,
                   "auto is bf16 autocast on CUDA, fp32 on the CPU; bf16 is autocast on the CPU too (slow: the "
                   "GPU's arithmetic, for tests)"),
        field("train", "activation_checkpointing", RHO_GET(activation_checkpointing),
              "recompute each layer in backward (less memory)"),
        field("train", "log_every", RHO_GET(log_every), "steps between log lines", positive, "must be > 0"),
        field("train", "tensorboard", RHO_GET(tensorboard),
              "write TensorBoard event files beside `log.jsonl` (`tensorboard --logdir` on the run's folder)"),
        field("train", "histogram_every", RHO_GET(histogram_every),
              "SLM: steps between histograms of the step's scores, all and kept (0: none)", non_negative,
              "must be >= 0"),
        field("train", "checkpoint_every", RHO_GET(checkpoint_every), "steps between checkpoints (and at the end)",
              positive, "must be > 0"),
        field("train", "keep_checkpoints", RHO_GET(keep_checkpoints), "newest checkpoints kept", positive,
              "must be > 0"),
        enum_field("train", "nan_policy", RHO_GET(nan_policy), kNanPolicyNames,
                   "on a non-finite loss or gradient norm: stop, or skip the step and count it"),
        field("train", "export_hf", RHO_GET(export_hf), "write `out_dir/hf` (Hugging Face layout) at the end"),
        enum_field("train", "sharding", RHO_GET(sharding), kShardingNames,
                   "data parallel: what is split over the ranks: nothing, AdamW's state (ZeRO-1), + gradients "
                   "(ZeRO-2), + weights (ZeRO-3/FSDP) (docs/distributed.md); a resume may move between the last three"),
        field("train", "bucket_mb", RHO_GET(bucket_mb), "data parallel: gradient all-reduce bucket size, MB",
              positive, "must be > 0"),
        field("slm", "ratio", RHO_GET(slm.ratio), "fraction of valid tokens kept", ratio_range, "must lie in (0, 1]"),
        field("slm", "ratio_end", RHO_GET(slm.ratio_end),
              "< 0: constant ratio; else linear from ratio to ratio_end over ratio_steps", ratio_end_range,
              "must be <= 1"),
        field("slm", "ratio_steps", RHO_GET(slm.ratio_steps), "steps of the ratio schedule"),
        enum_field("slm", "rule", RHO_GET(slm.rule), kSelectionRuleNames, "the score; excess is current − reference (the paper's)"),
        enum_field("slm", "scope", RHO_GET(slm.scope), kSelectionScopeNames, "the pool whose top ratio is kept"),
        enum_field("slm", "weighting", RHO_GET(slm.weighting), kWeightingNames, "how much a token counts"),
        field("slm", "temperature", RHO_GET(slm.temperature),
              "softmax weighting: weights ∝ exp(score / temperature)", positive, "must be > 0"),
        field("slm", "weight_clip", RHO_GET(slm.weight_clip),
              "linear weighting: weights ∝ clamp(score, 0, weight_clip) (nats)", positive, "must be > 0"),
        field("slm", "seed", RHO_GET(slm.seed), "seed of the random rule and of stochastic sampling"),
        list_field("slm", "reference_losses", RHO_GET(reference_losses),
                   "rho_score output for `data.train`, or a list of them"),
        list_field("slm", "reference_model", RHO_GET(reference_model),
                   "Hugging Face directory of a reference model run online, or a list of them"),
        enum_field("slm", "reference_combine", RHO_GET(reference_combine), kReferenceCombineNames,
                   "several references: per token, the mean or min of their losses"),
        enum_field("slm", "self_reference", RHO_GET(self_reference), kSelfReferenceNames,
                   "frozen: the starting weights; ema: a moving average of the model"),
        field("slm", "ema_decay", RHO_GET(ema_decay), "self_reference ema: ema ← decay·ema + (1−decay)·weights",
              unit_open, "must lie in [0, 1)"),
        field("slm", "start_step", RHO_GET(slm_start_step), "warm start: plain CLM before this step",
              non_negative, "must be >= 0"),
        list_field("slm", "eval_reference", RHO_GET(eval_reference),
                   "model(s) whose loss on each `data.eval` set is logged beside the model's (default: the online "
                   "or self reference)"),
        list_field("slm", "eval_reference_losses", RHO_GET(eval_reference_losses),
                   "NAME=DIR: the reference's rho_score output for eval set NAME (scored with `data.seq_len`), "
                   "instead of running a model"),
        field("slm", "catchup_margin", RHO_GET(catchup_margin),
              "caught up: the first eval set's loss within this many nats of the reference's (< 0: below it by that)"),
        enum_field("slm", "handoff", RHO_GET(handoff), kHandoffNames,
                   "once caught up: go on, clm, anneal the ratio to 1, or self (an EMA self-reference)"),
        field("slm", "handoff_steps", RHO_GET(handoff_steps), "handoff anneal: steps over which the ratio rises to 1",
              positive, "must be > 0"),
    };
    static const std::set<std::string> safe = {
        "run.out_dir",     "run.dist_timeout",       "data.eval_every",        "data.eval_batches",
        "train.log_every", "train.checkpoint_every", "train.keep_checkpoints", "train.export_hf",
        "train.tensorboard", "train.histogram_every",
        "train.bucket_mb"};  // gradient buckets change when sums happen, not what they are
    for (auto& k : t) k.resume_safe = safe.count(k.full()) > 0;
    return t;
  }();
  return table;
}
#undef RHO_GET

void read_section(const YAML::Node& root, const std::string& source, const std::string& name, TrainConfig& c,
                  const std::function<void(Section&)>& extra = {}) {
  Section s(root[name], source, name);
  for (const auto& k : keys())
    if (k.section == name) k.read(s, c);
  if (extra) extra(s);
  s.finish();
  for (const auto& k : keys())
    if (k.section == name && k.check) {
      const auto what = k.check(c);
      if (!what.empty())
        throw Error(fmt::format("{}: '{}' = {} is out of range: {}", s.where_is(k.name.c_str()), k.full(),
                                k.value(c), what));
    }
}

// model: either `config: file.yaml` or inline model fields, plus an optional `init_from` HF directory.
void read_model(const YAML::Node& root, const std::string& source, TrainConfig& c) {
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
}

// The whole file as a mapping of known sections, duplicates refused, --set overrides applied.
YAML::Node load_root(const std::string& text, const std::string& source, const std::vector<std::string>& overrides) {
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
  const std::set<std::string> sections = {"run", "model", "data", "optim", "train", "slm"};
  for (const auto& kv : root)
    if (!sections.count(kv.first.as<std::string>()))
      throw Error(fmt::format("{}: unknown section '{}' (run, model, data, optim, train, slm)", where(source, kv.first),
                              kv.first.as<std::string>()));
  return root;
}

// data: the table's keys plus `eval`, a map of names to token datasets; `train` is required.
void read_data(const YAML::Node& root, const std::string& source, TrainConfig& c) {
  read_section(root, source, "data", c, [&](Section& data) {
    if (YAML::Node ev = data.child("eval")) {
      if (!ev.IsMap()) throw Error(fmt::format("{}: 'data.eval' must map names to token datasets", where(source, ev)));
      for (const auto& kv : ev) c.eval_sets.push_back({kv.first.as<std::string>(), kv.second.as<std::string>()});
    }
  });
  if (c.train_data.empty()) throw Error(fmt::format("{}: 'data.train' is required", source));
}

// slm: the table's keys plus `start_fraction`, another way to give start_step (as a fraction of max_steps).
void read_slm(const YAML::Node& root, const std::string& source, TrainConfig& c) {
  double start_fraction = 0;
  bool both_starts = false;
  std::string start_where;
  read_section(root, source, "slm", c, [&](Section& slm) {
    slm.read("start_fraction", start_fraction);
    both_starts = slm.has("start_step") && slm.has("start_fraction");
    start_where = slm.where_is("start_fraction");
  });
  if (!(start_fraction >= 0 && start_fraction < 1))
    throw Error(fmt::format("{}: 'slm.start_fraction' = {} is out of range: must lie in [0, 1)", start_where,
                            start_fraction));
  if (start_fraction > 0) {
    if (both_starts) throw Error(fmt::format("{}: give slm.start_step or slm.start_fraction, not both", start_where));
    c.slm_start_step = static_cast<int64_t>(std::llround(start_fraction * static_cast<double>(c.max_steps)));
  }
}

// Rules across keys, each with the keys it names. A rule reads the finished config, so sections may come in any
// order in the file.
void check_reference_kind(const TrainConfig& c, const std::string& source) {
  const int kinds = !c.reference_losses.empty() + !c.reference_model.empty() + (c.self_reference != SelfReference::None);
  if (c.stage == Stage::Slm && c.slm.rule != SelectionRule::Current && c.slm.rule != SelectionRule::Random && kinds != 1)
    throw Error(fmt::format("{}: stage slm with rule '{}' needs exactly one of slm.reference_losses, "
                            "slm.reference_model and slm.self_reference", source, to_string(c.slm.rule)));
}

void check_eval_reference_losses(const TrainConfig& c, const std::string& source) {
  std::set<std::string> scored_sets;
  for (const auto& spec : c.eval_reference_losses) {
    const auto eq = spec.find('=');
    const std::string name = eq == std::string::npos ? "" : spec.substr(0, eq);
    const bool known = std::any_of(c.eval_sets.begin(), c.eval_sets.end(), [&](const EvalSet& e) { return e.name == name; });
    if (eq == std::string::npos || eq + 1 == spec.size() || !known)
      throw Error(fmt::format("{}: 'slm.eval_reference_losses' entry '{}' must be NAME=DIR with NAME a data.eval set",
                              source, spec));
    if (!scored_sets.insert(name).second)
      throw Error(fmt::format("{}: 'slm.eval_reference_losses' names eval set '{}' twice", source, name));
  }
}

void check_sharding(const TrainConfig& c, const std::string& source) {
  if (c.sharding == Sharding::Parameters && (c.self_reference != SelfReference::None || c.handoff == Handoff::Self))
    throw Error(fmt::format("{}: train.sharding parameters keeps a shard of the weights on each rank, but a "
                            "self-reference (slm.self_reference {}, slm.handoff {}) copies the whole model; use "
                            "train.sharding gradients, or an offline reference (slm.reference_losses)",
                            source, enum_name(kSelfReferenceNames, c.self_reference), enum_name(kHandoffNames, c.handoff)));
}

// A handoff is triggered by the reference's loss on the first eval set, and changes what the rule or weighting uses.
void check_handoff(const TrainConfig& c, const std::string& source) {
  if (c.handoff == Handoff::None) return;
  const bool offline_eval = !c.eval_sets.empty() &&
                            std::any_of(c.eval_reference_losses.begin(), c.eval_reference_losses.end(),
                                        [&](const std::string& s) { return s.rfind(c.eval_sets.front().name + "=", 0) == 0; });
  const bool eval_loss = offline_eval || !c.eval_reference.empty() ||
                         (!c.reference_model.empty() && c.reference_losses.empty());
  if (c.stage != Stage::Slm || c.eval_sets.empty() || !eval_loss || c.self_reference != SelfReference::None)
    throw Error(fmt::format("{}: slm.handoff {} needs stage slm, a data.eval set, and the reference's loss on it "
                            "(slm.eval_reference or slm.eval_reference_losses, or online reference models only); "
                            "not a self-reference",
                            source, enum_name(kHandoffNames, c.handoff)));
  const bool soft = c.slm.weighting == Weighting::Softmax || c.slm.weighting == Weighting::Linear;
  if (c.handoff == Handoff::Anneal && soft)
    throw Error(fmt::format("{}: slm.handoff anneal raises the ratio, which slm.weighting {} does not use", source,
                            enum_name(kWeightingNames, c.slm.weighting)));
  if (c.handoff == Handoff::Self && c.slm.rule != SelectionRule::Excess && c.slm.rule != SelectionRule::Reference)
    throw Error(fmt::format("{}: slm.handoff self changes the reference, which slm.rule {} does not use", source,
                            enum_name(kSelectionRuleNames, c.slm.rule)));
}
}  // namespace

std::string to_string(Stage v) { return enum_name(kStageNames, v); }
std::string to_string(Precision v) { return enum_name(kPrecisionNames, v); }
std::string to_string(NanPolicy v) { return enum_name(kNanPolicyNames, v); }

TrainConfig TrainConfig::from_yaml_string(const std::string& text, const std::string& source,
                                          const std::vector<std::string>& overrides) {
  const YAML::Node root = load_root(text, source, overrides);
  TrainConfig c;
  read_section(root, source, "run", c);
  read_model(root, source, c);
  read_data(root, source, c);
  read_section(root, source, "optim", c);
  read_section(root, source, "train", c);
  read_slm(root, source, c);
  check_reference_kind(c, source);
  check_eval_reference_losses(c, source);
  check_sharding(c, source);
  check_handoff(c, source);
  return c;
}

TrainConfig TrainConfig::from_yaml_file(const std::string& path, const std::vector<std::string>& overrides) {
  return from_yaml_string(read_text_file(path), path, overrides);
}

std::string TrainConfig::to_yaml() const {
  YAML::Emitter o;
  o << YAML::BeginMap;
  for (const char* section : {"run", "model", "data", "optim", "train", "slm"}) {
    o << YAML::Key << section << YAML::Value;
    if (std::string(section) == "model") {
      // A run started from a Hugging Face directory takes its shape from there: only init_from is written.
      if (init_from.empty())
        o << YAML::Load(model.to_yaml());
      else
        o << YAML::BeginMap << YAML::Key << "init_from" << YAML::Value << init_from << YAML::EndMap;
      continue;
    }
    o << YAML::BeginMap;
    for (const auto& k : keys())
      if (k.section == section) k.write(o, *this);
    if (std::string(section) == "data" && !eval_sets.empty()) {
      o << YAML::Key << "eval" << YAML::Value << YAML::BeginMap;
      for (const auto& e : eval_sets) o << YAML::Key << e.name << YAML::Value << e.path;
      o << YAML::EndMap;
    }
    o << YAML::EndMap;
  }
  o << YAML::EndMap;
  return std::string(o.c_str()) + "\n";
}

std::string TrainConfig::key_table() {
  const TrainConfig defaults;
  std::string out = "| key | default | meaning |\n| --- | --- | --- |\n";
  auto row = [&](const std::string& key, const std::string& def, const std::string& doc) {
    out += fmt::format("| `{}` | {} | {} |\n", key, def, doc);
  };
  for (const auto& k : keys()) {
    if (k.section == "data" && k.name == "train") {  // the model section and data.eval go where they are read
      row("model.config", "", "a model YAML file (configs/model/) or, instead, its fields inline (docs/model.md)");
      row("model.init_from", "", "start from a Hugging Face directory (its config.json gives the shape)");
    }
    const auto def = k.full() == "data.train" ? std::string("required") : k.value(defaults);
    row(k.full(), def, k.doc + (k.resume_safe ? "; a resume may change it" : ""));
    if (k.full() == "data.exclude_boundary")
      row("data.eval", "", "`name: token dataset` pairs evaluated periodically (loss and perplexity); a resume may change it");
    if (k.full() == "slm.start_step")
      row("slm.start_fraction", "0", "warm start given as a fraction of `optim.max_steps` (instead of start_step)");
  }
  return out;
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
  for (const auto& k : keys())
    if (k.full() == key) return k.resume_safe;
  return key.rfind("data.eval.", 0) == 0;
}

double TrainConfig::lr_at(int64_t step) const {
  return LrSchedule{lr, min_lr, warmup_steps, max_steps, schedule}.at(step);
}

}  // namespace rho
