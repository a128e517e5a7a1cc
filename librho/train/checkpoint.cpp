#include "librho/train/checkpoint.h"

#include <ATen/ops/cat.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <set>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>

#include "librho/io/hf_checkpoint.h"
#include "librho/io/safetensors.h"
#include "librho/util/enum_names.h"
#include "librho/util/error.h"
#include "librho/util/json_fields.h"
#include "librho/util/files.h"
#include "librho/util/sha256.h"

namespace rho {
namespace fs = std::filesystem;

std::string checkpoint_dir(const std::string& out_dir, int64_t step) {
  return (fs::path(out_dir) / "checkpoints" / fmt::format("step-{:08d}", step)).string();
}

namespace {

// Removes temporaries of killed writers (any step, any pid): they are never read, and a run killed often would
// fill the disk.
void remove_stale_temporaries(const fs::path& checkpoints) {
  if (!fs::exists(checkpoints)) return;
  for (const auto& e : fs::directory_iterator(checkpoints)) {
    const auto name = e.path().filename().string();
    if (name.rfind("step-", 0) == 0 && name.find(".tmp.") != std::string::npos) fs::remove_all(e.path());
  }
}

nlohmann::ordered_json sharding_json(const CheckpointSharding& s) {
  nlohmann::ordered_json j;
  j["level"] = enum_name(kShardingNames, s.level);
  j["world_size"] = s.world_size;
  j["units"] = nlohmann::ordered_json::array();
  for (const auto& u : s.units) {
    nlohmann::ordered_json params = nlohmann::ordered_json::array();
    for (const auto& p : u.params)
      params.push_back({{"name", p.name}, {"shape", p.shape}, {"offset", p.offset}, {"numel", p.numel}});
    j["units"].push_back({{"name", u.name}, {"numel", u.numel}, {"params", params}});
  }
  return j;
}

CheckpointSharding sharding_from_json(const JsonFields& r, const nlohmann::json& j) {
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  CheckpointSharding s;
  if (!j.is_object()) throw r.error("sharding", "expected an object");
  r.only(j, {"level", "world_size", "units"}, "sharding");
  const auto level = r.string(j, "level", "sharding.level");
  bool known = false;
  for (const auto& [v, name] : kShardingNames)
    if (level == name && v != Sharding::None) s.level = v, known = true;
  if (!known) throw r.error("sharding.level", fmt::format("'{}' is not optimizer, gradients or parameters", level));
  s.world_size = r.integer(j, "world_size", "sharding.world_size", 1, kMax);
  const auto& units = r.at(j, "units", "sharding.units");
  if (!units.is_array() || units.empty()) throw r.error("sharding.units", "expected a non-empty array");
  for (size_t i = 0; i < units.size(); ++i) {
    const auto key = fmt::format("sharding.units[{}]", i);
    const auto& u = units[i];
    if (!u.is_object()) throw r.error(key, "expected an object");
    ShardedUnitLayout L;
    L.name = r.string(u, "name", key + ".name");
    L.numel = r.integer(u, "numel", key + ".numel", 1, kMax);
    const auto& params = r.at(u, "params", key + ".params");
    if (!params.is_array()) throw r.error(key + ".params", "expected an array");
    int64_t next = 0;
    for (size_t k = 0; k < params.size(); ++k) {
      const auto pk = fmt::format("{}.params[{}]", key, k);
      const auto& p = params[k];
      if (!p.is_object() || !p.contains("shape") || !p["shape"].is_array())
        throw r.error(pk, "expected {name, shape, offset, numel}");
      ShardedParam P;
      P.name = r.string(p, "name", pk + ".name");
      P.offset = r.integer(p, "offset", pk + ".offset", 0, kMax);
      P.numel = r.integer(p, "numel", pk + ".numel", 1, kMax);
      int64_t n = 1;
      for (const auto& d : p["shape"]) {
        if (!d.is_number_integer() || d.get<int64_t>() < 1) throw r.error(pk + ".shape", "expected positive integers");
        P.shape.push_back(d.get<int64_t>());
        n *= P.shape.back();
      }
      if (n != P.numel || P.offset != next) throw r.error(pk, "shape, offset and numel do not tile the unit");
      next += P.numel;
      L.params.push_back(std::move(P));
    }
    if (next != L.numel) throw r.error(key + ".numel", "is not the sum of its parameters' numel");
    s.units.push_back(std::move(L));
  }
  return s;
}

// Rank 0's part of every checkpoint, in `tmp`: optimizer.safetensors (AdamW's state when unsharded, the RNG, the
// reference) and state.json (checksums of `files` and of optimizer.safetensors); then the rename and pruning.
void commit_checkpoint(const std::string& out_dir, const fs::path& tmp, const Checkpoint& ckpt,
                       const std::vector<std::pair<std::string, std::string>>& files, int64_t keep_last) {
  const fs::path final_dir = checkpoint_dir(out_dir, ckpt.state.step);
  NamedTensors optimizer = ckpt.optimizer;
  if (ckpt.rng_cpu.defined()) optimizer.emplace_back("rng.cpu", ckpt.rng_cpu);
  optimizer.insert(optimizer.end(), ckpt.reference.begin(), ckpt.reference.end());
  save_safetensors((tmp / "optimizer.safetensors").string(), optimizer);
  nlohmann::ordered_json j;
  j["step"] = ckpt.state.step;
  j["loader_step"] = ckpt.state.loader_step;
  j["tokens_seen"] = ckpt.state.tokens_seen;
  j["world_size"] = ckpt.state.world_size;
  if (ckpt.state.handoff_step >= 0) j["handoff_step"] = ckpt.state.handoff_step;
  j["config"] = ckpt.state.config_yaml;
  j["model_config"] = ckpt.state.model_config_json;
  if (ckpt.sharding.level != Sharding::None) j["sharding"] = sharding_json(ckpt.sharding);
  j["sha256"] = nlohmann::ordered_json::object();
  for (const auto& [file, sha] : files) j["sha256"][file] = sha;
  j["sha256"]["optimizer.safetensors"] = sha256_file((tmp / "optimizer.safetensors").string());
  write_file_atomic((tmp / "state.json").string(), j.dump(2) + "\n");
  if (fs::exists(final_dir)) fs::remove_all(final_dir);  // same step written again (a resumed run)
  fs::rename(tmp, final_dir);
  fsync_dir(final_dir.parent_path().string());

  // Keep the newest keep_last complete checkpoints.
  std::vector<fs::path> all;
  for (const auto& e : fs::directory_iterator(final_dir.parent_path()))
    if (e.is_directory() && e.path().filename().string().rfind("step-", 0) == 0 &&
        e.path().filename().string().find(".tmp") == std::string::npos)
      all.push_back(e.path());
  std::sort(all.begin(), all.end());
  for (size_t i = 0; i + keep_last < all.size(); ++i) fs::remove_all(all[i]);
}

}  // namespace

std::string CheckpointSharding::shard_file(int64_t rank, int64_t world) {
  return fmt::format("shard-{:05d}-of-{:05d}.safetensors", rank, world);
}

void save_checkpoint(const std::string& out_dir, const Checkpoint& ckpt, int64_t keep_last) {
  const fs::path final_dir = checkpoint_dir(out_dir, ckpt.state.step);
  const fs::path tmp = final_dir.string() + fmt::format(".tmp.{}", ::getpid());
  remove_stale_temporaries(final_dir.parent_path());
  fs::create_directories(tmp);
  save_safetensors((tmp / "model.safetensors").string(), ckpt.model);
  commit_checkpoint(out_dir, tmp, ckpt, {{"model.safetensors", sha256_file((tmp / "model.safetensors").string())}},
                    keep_last);
}

// Every rank must find the same temporary directory: its name is fixed (".tmp.shards"), and rank 0 clears it
// (and other leftovers) before anyone writes.
std::string sharded_checkpoint_tmp(const std::string& out_dir, int64_t step) {
  return checkpoint_dir(out_dir, step) + ".tmp.shards";
}

void begin_sharded_checkpoint(const std::string& out_dir, int64_t step) {
  const fs::path tmp = sharded_checkpoint_tmp(out_dir, step);
  remove_stale_temporaries(tmp.parent_path());
  fs::create_directories(tmp);
}

std::string write_checkpoint_shard(const std::string& out_dir, int64_t step, int64_t rank, int64_t world,
                                   const NamedTensors& shard) {
  const auto path = (fs::path(sharded_checkpoint_tmp(out_dir, step)) / CheckpointSharding::shard_file(rank, world)).string();
  save_safetensors(path, shard);
  return sha256_file(path);
}

void commit_sharded_checkpoint(const std::string& out_dir, const Checkpoint& ckpt, int64_t keep_last) {
  std::vector<std::pair<std::string, std::string>> files;
  const auto& s = ckpt.sharding;
  for (int64_t q = 0; q < s.world_size; ++q) files.emplace_back(CheckpointSharding::shard_file(q, s.world_size), s.shard_sha256.at(q));
  commit_checkpoint(out_dir, sharded_checkpoint_tmp(out_dir, ckpt.state.step), ckpt, files, keep_last);
}

NamedTensors read_checkpoint_shard(const std::string& dir, const Checkpoint& ckpt, int64_t q) {
  const auto path = (fs::path(dir) / CheckpointSharding::shard_file(q, ckpt.sharding.world_size)).string();
  const auto& want = ckpt.sharding.shard_sha256.at(q);
  if (sha256_file(path) != want)
    throw Error(fmt::format("{}: checksum mismatch (corrupted checkpoint; expected sha256 {})", path, want));
  auto f = SafetensorsFile::open(path);
  NamedTensors out;
  for (const auto& name : f.names()) out.emplace_back(name, f.tensor(name).clone());
  return out;
}

std::vector<std::string> list_checkpoints(const std::string& out_dir) {
  const fs::path root = fs::path(out_dir) / "checkpoints";
  std::vector<std::string> all;
  if (!fs::exists(root)) return all;
  for (const auto& e : fs::directory_iterator(root)) {
    const auto name = e.path().filename().string();
    if (e.is_directory() && name.rfind("step-", 0) == 0 && name.find(".tmp") == std::string::npos &&
        fs::exists(e.path() / "state.json"))
      all.push_back(e.path().string());
  }
  std::sort(all.begin(), all.end());  // zero-padded step numbers: name order is step order
  return all;
}

std::optional<std::string> latest_checkpoint(const std::string& out_dir) {
  const auto all = list_checkpoints(out_dir);
  if (all.empty()) return std::nullopt;
  return all.back();
}

Checkpoint load_checkpoint(const std::string& dir) {
  const auto state_path = (fs::path(dir) / "state.json").string();
  const JsonFields r{state_path};
  const auto j = r.parse_object(read_text_file(state_path));
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  r.only(j, {"step", "loader_step", "tokens_seen", "world_size", "handoff_step", "config", "model_config", "sharding",
             "sha256"}, "");
  Checkpoint c;
  c.state.step = r.integer(j, "step", "step", 0, kMax);
  c.state.loader_step = r.integer(j, "loader_step", "loader_step", 0, kMax);
  c.state.tokens_seen = r.integer(j, "tokens_seen", "tokens_seen", 0, kMax);
  c.state.world_size = r.integer(j, "world_size", "world_size", 1, kMax);
  if (j.contains("handoff_step")) c.state.handoff_step = r.integer(j, "handoff_step", "handoff_step", 0, kMax);
  c.state.config_yaml = r.string(j, "config", "config");
  if (j.contains("model_config")) c.state.model_config_json = r.string(j, "model_config", "model_config");
  const auto& sums = r.at(j, "sha256", "sha256");
  if (!sums.is_object()) throw r.error("sha256", "expected an object of file -> sha256");
  std::vector<std::string> files = {"optimizer.safetensors"};
  if (j.contains("sharding")) {
    c.sharding = sharding_from_json(r, j["sharding"]);
    std::set<std::string> allowed(files.begin(), files.end());
    for (int64_t q = 0; q < c.sharding.world_size; ++q) {
      const auto file = CheckpointSharding::shard_file(q, c.sharding.world_size);
      allowed.insert(file);
      c.sharding.shard_sha256.push_back(r.sha(sums, file.c_str(), "sha256." + file));  // verified when read
    }
    r.only(sums, allowed, "sha256");
  } else {
    files.push_back("model.safetensors");
    r.only(sums, {"model.safetensors", "optimizer.safetensors"}, "sha256");
  }
  for (const auto& file : files) {
    const auto path = (fs::path(dir) / file).string();
    const auto want = r.sha(sums, file.c_str(), "sha256." + file);
    if (sha256_file(path) != want)
      throw Error(fmt::format("{}: checksum mismatch (corrupted checkpoint; expected sha256 {})", path, want));
  }
  auto read_all = [](const std::string& path) {
    auto f = SafetensorsFile::open(path);
    NamedTensors out;
    for (const auto& name : f.names()) out.emplace_back(name, f.tensor(name).clone());
    return out;
  };
  if (c.sharding.level == Sharding::None) c.model = read_all((fs::path(dir) / "model.safetensors").string());
  for (auto& [name, t] : read_all((fs::path(dir) / "optimizer.safetensors").string())) {
    if (name == "rng.cpu")
      c.rng_cpu = t;
    else if (name.rfind("ema.", 0) == 0 || name.rfind("handoff.ema.", 0) == 0)
      c.reference.emplace_back(name, t);
    else
      c.optimizer.emplace_back(name, t);
  }
  return c;
}

namespace {
// A sharded checkpoint's weights, whole: each unit's pieces from every shard, concatenated and split by parameter.
NamedTensors assemble_sharded_weights(const Checkpoint& ck, const std::string& dir) {
  const auto& S = ck.sharding;
  std::vector<std::vector<at::Tensor>> pieces(S.units.size());
  for (int64_t q = 0; q < S.world_size; ++q) {
    const auto shard = read_checkpoint_shard(dir, ck, q);
    std::map<std::string, at::Tensor> by_name(shard.begin(), shard.end());
    for (size_t u = 0; u < S.units.size(); ++u) {
      const auto [b, e] = S.units[u].owned(q, S.world_size);
      const auto it = by_name.find(S.units[u].name + ".param");
      if (it == by_name.end() || it->second.numel() != e - b)
        throw Error(fmt::format("{}/{}: '{}.param' missing or of the wrong size", dir,
                                CheckpointSharding::shard_file(q, S.world_size), S.units[u].name));
      pieces[u].push_back(it->second.reshape(-1).to(at::kFloat));
    }
  }
  NamedTensors out;
  for (size_t u = 0; u < S.units.size(); ++u) {
    const auto flat = at::cat(pieces[u]);
    for (const auto& P : S.units[u].params) out.emplace_back(P.name, flat.narrow(0, P.offset, P.numel).view(P.shape).clone());
  }
  return out;
}
}  // namespace

void load_model_weights(LlamaImpl& model, const Checkpoint& ckpt, const std::string& dir) {
  const auto tensors = ckpt.sharding.level == Sharding::None ? NamedTensors() : assemble_sharded_weights(ckpt, dir);
  const auto& source = ckpt.sharding.level == Sharding::None ? ckpt.model : tensors;
  std::map<std::string, at::Tensor> by_name(source.begin(), source.end());
  at::NoGradGuard no_grad;
  for (auto& item : model.named_parameters()) {
    auto it = by_name.find(item.key());
    if (it == by_name.end() || it->second.sizes() != item.value().sizes())
      throw Error(fmt::format("{}/{}: tensor '{}' missing or of another shape", dir,
                              ckpt.sharding.level == Sharding::None ? "model.safetensors" : "shard-*.safetensors",
                              item.key()));
    item.value().copy_(it->second);
  }
}

Llama load_model(const std::string& path) {
  const fs::path p(path);
  if (fs::exists(p / "config.json")) return load_hf_model(path);
  std::string dir = path;
  if (!fs::exists(p / "state.json")) {
    const auto latest = latest_checkpoint(path);
    if (!latest)
      throw Error(fmt::format("{}: not a Hugging Face directory (config.json), a librho checkpoint (state.json) or "
                              "a run directory with checkpoints", path));
    dir = *latest;
  }
  return model_from_checkpoint(load_checkpoint(dir), dir);
}

Llama model_from_checkpoint(const Checkpoint& ck, const std::string& dir) {
  if (ck.state.model_config_json.empty())
    throw Error(fmt::format("{}/state.json: no model_config (written by an older librho)", dir));
  Llama model(LlamaConfig::from_hf_json_string(ck.state.model_config_json, dir + "/state.json"));
  load_model_weights(*model, ck, dir);
  return model;
}

}  // namespace rho
