#include "librho/io/hf_checkpoint.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <iostream>
#include <unistd.h>

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "librho/io/safetensors.h"
#include "librho/util/error.h"
#include "librho/util/files.h"

namespace rho {
namespace fs = std::filesystem;

std::string hf_tensor_name(const std::string& name) {
  return name.rfind("lm_head.", 0) == 0 ? name : "model." + name;
}

namespace {

// Which file holds each tensor: one file, or the shards listed by the index.
std::map<std::string, std::string> weight_files(const std::string& dir) {
  const auto single = fs::path(dir) / "model.safetensors";
  const auto index = fs::path(dir) / "model.safetensors.index.json";
  std::map<std::string, std::string> where;
  if (fs::exists(index)) {
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(read_text_file(index.string()));
    } catch (const nlohmann::json::exception& e) {
      throw Error(fmt::format("{}: invalid JSON ({})", index.string(), e.what()));
    }
    if (!j.contains("weight_map") || !j["weight_map"].is_object())
      throw Error(fmt::format("{}: missing object 'weight_map'", index.string()));
    for (auto& [name, file] : j["weight_map"].items()) {
      if (!file.is_string() || file.get<std::string>().find('/') != std::string::npos)
        throw Error(fmt::format("{}: weight_map entry '{}' is not a file name", index.string(), name));
      where[name] = (fs::path(dir) / file.get<std::string>()).string();
    }
  } else if (fs::exists(single)) {
    for (const auto& name : SafetensorsFile::open(single.string()).names()) where[name] = single.string();
  } else {
    throw Error(fmt::format("{}: no model.safetensors or model.safetensors.index.json", dir));
  }
  return where;
}

at::ScalarType dtype_from_name(const std::string& s) {
  if (s == "float32") return at::kFloat;
  if (s == "bfloat16") return at::kBFloat16;
  if (s == "float16") return at::kHalf;
  throw Error(fmt::format("dtype '{}' is not one of float32, bfloat16, float16", s));
}

}  // namespace

void load_hf_weights(LlamaImpl& model, const std::string& dir) {
  const auto where = weight_files(dir);
  std::map<std::string, SafetensorsFile> open_files;
  std::set<std::string> used;
  at::NoGradGuard no_grad;
  for (auto& item : model.named_parameters()) {
    const std::string name = hf_tensor_name(item.key());
    auto it = where.find(name);
    if (it == where.end()) throw Error(fmt::format("{}: checkpoint has no tensor '{}'", dir, name));
    auto fit = open_files.find(it->second);
    if (fit == open_files.end()) fit = open_files.emplace(it->second, SafetensorsFile::open(it->second)).first;
    const at::Tensor src = fit->second.tensor(name);
    at::Tensor& dst = item.value();
    if (src.sizes() != dst.sizes())
      throw Error(fmt::format("{}: tensor '{}' has shape {} but the model expects {}", it->second, name,
                              fmt::join(src.sizes(), "x"), fmt::join(dst.sizes(), "x")));
    if (!at::isFloatingType(src.scalar_type()))
      throw Error(fmt::format("{}: tensor '{}' has non-float dtype {}", it->second, name,
                              c10::toString(src.scalar_type())));
    dst.copy_(src);
    used.insert(name);
  }
  for (const auto& kv : where) {
    const auto& name = kv.first;
    const bool harmless = name.find("rotary_emb.inv_freq") != std::string::npos ||
                          (model.config.tie_word_embeddings && name == "lm_head.weight");
    if (!used.count(name) && !harmless)
      throw Error(fmt::format("{}: checkpoint tensor '{}' has no place in the model (config mismatch?)", kv.second,
                              name));
  }
}

Llama load_hf_model(const std::string& dir) {
  const auto path = (fs::path(dir) / "config.json").string();
  std::vector<std::string> unknown;
  Llama model(LlamaConfig::from_hf_json_file(path, &unknown));
  if (!unknown.empty())
    std::cerr << fmt::format("{}: ignored keys librho does not know (transformers ignores unknown keys too): {}\n", path,
                             fmt::join(unknown, ", "));
  load_hf_weights(*model, dir);
  return model;
}

void save_hf_model(LlamaImpl& model, const std::string& dir, const HfSaveOptions& options) {
  std::vector<std::pair<std::string, std::vector<int64_t>>> shapes;
  std::vector<at::Tensor> params;
  for (const auto& item : model.named_parameters()) {
    shapes.emplace_back(item.key(), item.value().sizes().vec());
    params.push_back(item.value());
  }
  save_hf_tensors(model.config, shapes, [&](size_t i) { return params[i]; }, dir, options);
}

void save_hf_tensors(const LlamaConfig& config, const std::vector<std::pair<std::string, std::vector<int64_t>>>& shapes,
                     const std::function<at::Tensor(size_t)>& tensor, const std::string& dir,
                     const HfSaveOptions& options) {
  const auto dtype = dtype_from_name(options.dtype);
  const fs::path final_dir = fs::absolute(dir);
  const fs::path tmp = final_dir.string() + fmt::format(".tmp.{}", ::getpid());
  // Leftovers of killed writers: DIR.tmp.PID (incomplete) and DIR.old.PID (the export before, replaced since).
  if (fs::exists(final_dir.parent_path()))
    for (const auto& e : fs::directory_iterator(final_dir.parent_path())) {
      const auto name = e.path().filename().string(), base = final_dir.filename().string();
      if (name.rfind(base + ".tmp.", 0) == 0 || name.rfind(base + ".old.", 0) == 0) fs::remove_all(e.path());
    }
  fs::create_directories(tmp);

  // Tensors grouped into files of at most max_shard_bytes (a single tensor may exceed it alone), by their sizes.
  const int64_t elem = at::elementSize(dtype);
  std::vector<std::vector<size_t>> files(1);
  int64_t bytes = 0, total = 0;
  for (size_t i = 0; i < shapes.size(); ++i) {
    int64_t n = elem;
    for (int64_t d : shapes[i].second) n *= d;
    if (bytes > 0 && bytes + n > options.max_shard_bytes) {
      files.emplace_back();
      bytes = 0;
    }
    files.back().push_back(i);
    bytes += n;
    total += n;
  }
  const std::map<std::string, std::string> meta = {{"format", "pt"}};
  nlohmann::ordered_json index;
  for (size_t f = 0; f < files.size(); ++f) {
    std::vector<std::pair<std::string, at::Tensor>> part;
    for (size_t i : files[f]) {
      auto t = tensor(i).detach().to(at::kCPU, dtype).contiguous();
      if (t.sizes().vec() != shapes[i].second)
        throw Error(fmt::format("save_hf_tensors: tensor '{}' has shape {} where {} was announced", shapes[i].first,
                                t.sizes(), c10::IntArrayRef(shapes[i].second)));
      part.emplace_back(hf_tensor_name(shapes[i].first), std::move(t));
    }
    const auto file = files.size() == 1 ? std::string("model.safetensors")
                                        : fmt::format("model-{:05d}-of-{:05d}.safetensors", f + 1, files.size());
    save_safetensors((tmp / file).string(), part, meta);
    for (const auto& [name, t] : part) index["weight_map"][name] = file;
  }
  if (files.size() > 1) {
    index["metadata"]["total_size"] = total;
    write_file_atomic((tmp / "model.safetensors.index.json").string(), index.dump(2) + "\n");
  }
  write_file_atomic((tmp / "config.json").string(), config.to_hf_json(options.dtype));

  // Swap into place: the old directory (if any) is removed only once the new one is complete.
  const fs::path old = final_dir.string() + fmt::format(".old.{}", ::getpid());
  const bool had_old = fs::exists(final_dir);
  if (had_old) fs::rename(final_dir, old);
  fs::rename(tmp, final_dir);
  fsync_dir(final_dir.parent_path().string());
  if (had_old) fs::remove_all(old);
}

}  // namespace rho
