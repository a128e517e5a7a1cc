#include "librho/train/checkpoint.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>

#include "librho/io/hf_checkpoint.h"
#include "librho/io/safetensors.h"
#include "librho/util/error.h"
#include "librho/util/json_fields.h"
#include "librho/util/files.h"
#include "librho/util/sha256.h"

namespace rho {
namespace fs = std::filesystem;

std::string checkpoint_dir(const std::string& out_dir, int64_t step) {
  return (fs::path(out_dir) / "checkpoints" / fmt::format("step-{:08d}", step)).string();
}

void save_checkpoint(const std::string& out_dir, const Checkpoint& ckpt, int64_t keep_last) {
  const fs::path final_dir = checkpoint_dir(out_dir, ckpt.state.step);
  const fs::path tmp = final_dir.string() + fmt::format(".tmp.{}", ::getpid());
  // Temporaries of killed writers (any step, any pid) are never read; a run killed often would fill the disk.
  if (fs::exists(final_dir.parent_path()))
    for (const auto& e : fs::directory_iterator(final_dir.parent_path())) {
      const auto name = e.path().filename().string();
      if (name.rfind("step-", 0) == 0 && name.find(".tmp.") != std::string::npos) fs::remove_all(e.path());
    }
  fs::create_directories(tmp);
  save_safetensors((tmp / "model.safetensors").string(), ckpt.model);
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
  j["sha256"] = {{"model.safetensors", sha256_file((tmp / "model.safetensors").string())},
                 {"optimizer.safetensors", sha256_file((tmp / "optimizer.safetensors").string())}};
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
  r.only(j, {"step", "loader_step", "tokens_seen", "world_size", "handoff_step", "config", "model_config", "sha256"}, "");
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
  r.only(sums, {"model.safetensors", "optimizer.safetensors"}, "sha256");
  for (const char* file : {"model.safetensors", "optimizer.safetensors"}) {
    const auto path = (fs::path(dir) / file).string();
    const auto want = r.sha(sums, file, std::string("sha256.") + file);
    if (sha256_file(path) != want)
      throw Error(fmt::format("{}: checksum mismatch (corrupted checkpoint; expected sha256 {})", path, want));
  }
  auto read_all = [](const std::string& path) {
    auto f = SafetensorsFile::open(path);
    NamedTensors out;
    for (const auto& name : f.names()) out.emplace_back(name, f.tensor(name).clone());
    return out;
  };
  c.model = read_all((fs::path(dir) / "model.safetensors").string());
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

void load_model_weights(LlamaImpl& model, const Checkpoint& ckpt, const std::string& dir) {
  std::map<std::string, at::Tensor> by_name(ckpt.model.begin(), ckpt.model.end());
  at::NoGradGuard no_grad;
  for (auto& item : model.named_parameters()) {
    auto it = by_name.find(item.key());
    if (it == by_name.end() || it->second.sizes() != item.value().sizes())
      throw Error(fmt::format("{}/model.safetensors: tensor '{}' missing or of another shape", dir, item.key()));
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
