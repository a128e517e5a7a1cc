#include "librho/io/safetensors.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>

#include "librho/util/error.h"
#include "librho/util/files.h"

namespace rho {
namespace {

constexpr uint64_t kMaxHeaderBytes = 100ull << 20;  // the format's own limit

const std::vector<std::pair<std::string, at::ScalarType>>& dtype_table() {
  static const std::vector<std::pair<std::string, at::ScalarType>> t = {
      {"F64", at::kDouble}, {"F32", at::kFloat},  {"F16", at::kHalf},  {"BF16", at::kBFloat16},
      {"I64", at::kLong},   {"I32", at::kInt},    {"I16", at::kShort}, {"I8", at::kChar},
      {"U8", at::kByte},    {"BOOL", at::kBool},  {"U16", at::kUInt16}, {"U32", at::kUInt32}};
  return t;
}

}  // namespace

std::string safetensors_dtype_name(at::ScalarType t) {
  for (const auto& [name, type] : dtype_table())
    if (type == t) return name;
  throw Error(fmt::format("safetensors: dtype {} cannot be stored", c10::toString(t)));
}

namespace {
void read_header_metadata(const nlohmann::json& v, const std::string& source,
                          std::map<std::string, std::string>* metadata) {
  if (!v.is_object()) throw Error(fmt::format("{}: bad safetensors header: __metadata__ is not an object", source));
  for (auto& [k, s] : v.items()) {
    if (!s.is_string())
      throw Error(fmt::format("{}: bad safetensors header: __metadata__ value '{}' is not a string", source, k));
    if (metadata) (*metadata)[k] = s.get<std::string>();
  }
}

// One tensor's entry: its dtype and shape, and data_offsets that hold exactly its bytes within the data.
SafetensorsEntry parse_header_entry(const std::string& name, const nlohmann::json& v, uint64_t data_size,
                                    const std::string& source) {
  auto bad = [&](const std::string& what) { return Error(fmt::format("{}: tensor '{}': {}", source, name, what)); };
  if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets"))
    throw bad("header entry needs dtype, shape and data_offsets");
  const auto& dt = v["dtype"];
  if (!dt.is_string()) throw bad("dtype is not a string");
  auto it = std::find_if(dtype_table().begin(), dtype_table().end(),
                         [&](const auto& p) { return p.first == dt.get<std::string>(); });
  if (it == dtype_table().end()) throw bad(fmt::format("unsupported dtype {}", dt.dump()));
  SafetensorsEntry e;
  e.dtype = it->second;
  const auto& shape = v["shape"];
  if (!shape.is_array()) throw bad("shape is not an array");
  // Sizes are checked against overflow including the element size: shape [2^61] of F64 is 2^64 bytes, which
  // would wrap to 0 and match empty data_offsets (found by the fuzz target's byte-count invariant).
  const uint64_t elem = c10::elementSize(e.dtype);
  constexpr uint64_t kMaxBytes = uint64_t(1) << 62;
  uint64_t numel = 1;
  bool empty = false;
  for (const auto& d : shape) {
    if (!d.is_number_unsigned()) throw bad(fmt::format("shape {} holds a non-integer or negative size", shape.dump()));
    const uint64_t n = d.get<uint64_t>();
    if (n > kMaxBytes) throw bad(fmt::format("shape {} is too large", shape.dump()));
    e.shape.push_back(static_cast<int64_t>(n));
    if (n == 0) empty = true;
    if (!empty && numel > kMaxBytes / elem / n) throw bad(fmt::format("shape {} is too large", shape.dump()));
    numel = empty ? 0 : numel * n;
  }
  const auto& off = v["data_offsets"];
  if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
    throw bad("data_offsets must be two non-negative integers");
  e.begin = off[0].get<uint64_t>();
  e.end = off[1].get<uint64_t>();
  if (e.begin > e.end) throw bad("data_offsets are reversed");
  if (e.end > data_size)
    throw bad(fmt::format("data ends at byte {} but the file holds only {} data bytes (truncated?)", e.end,
                          data_size));
  const uint64_t nbytes = numel * elem;
  if (e.end - e.begin != nbytes)
    throw bad(fmt::format("shape {} x {} needs {} bytes, data_offsets give {}", shape.dump(), dt.dump(), nbytes,
                          e.end - e.begin));
  return e;
}

// Tensors may not overlap (the format also forbids holes; only the former matters to safety).
void check_no_overlap(const std::map<std::string, SafetensorsEntry>& entries, const std::string& source) {
  std::vector<std::pair<uint64_t, std::string>> starts;
  for (const auto& [name, e] : entries)
    if (e.end > e.begin) starts.emplace_back(e.begin, name);
  std::sort(starts.begin(), starts.end());
  for (size_t i = 1; i < starts.size(); ++i)
    if (entries.at(starts[i - 1].second).end > starts[i].first)
      throw Error(fmt::format("{}: tensors '{}' and '{}' overlap", source, starts[i - 1].second, starts[i].second));
}
}  // namespace

std::map<std::string, SafetensorsEntry> SafetensorsFile::parse_header(const std::string& text, uint64_t data_size,
                                                                      const std::string& source,
                                                                      std::map<std::string, std::string>* metadata) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("{}: bad safetensors header: invalid JSON ({})", source, e.what()));
  }
  if (!j.is_object()) throw Error(fmt::format("{}: bad safetensors header: not a JSON object", source));
  std::map<std::string, SafetensorsEntry> entries;
  for (auto& [name, v] : j.items()) {
    if (name == "__metadata__")
      read_header_metadata(v, source, metadata);
    else
      entries.emplace(name, parse_header_entry(name, v, data_size, source));
  }
  check_no_overlap(entries, source);
  return entries;
}

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  SafetensorsFile f;
  f.file_ = MappedFile::open(path);
  const uint64_t size = f.file_->size();
  if (size < 8) throw Error(fmt::format("{}: not a safetensors file (only {} bytes)", path, size));
  uint64_t header_len = 0;
  std::memcpy(&header_len, f.file_->data(), 8);  // little-endian on every platform we build for
  if (header_len > kMaxHeaderBytes || header_len > size - 8)
    throw Error(fmt::format("{}: bad safetensors header length {} (file has {} bytes; truncated or not safetensors)",
                            path, header_len, size));
  const std::string header(reinterpret_cast<const char*>(f.file_->data()) + 8, header_len);
  f.entries_ = parse_header(header, size - 8 - header_len, path, &f.metadata_);
  f.data_ = f.file_->data() + 8 + header_len;
  return f;
}

const std::string& SafetensorsFile::path() const { return file_->path(); }

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> out;
  for (const auto& kv : entries_) out.push_back(kv.first);
  return out;
}

const SafetensorsEntry& SafetensorsFile::entry(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) throw Error(fmt::format("{}: no tensor named '{}'", path(), name));
  return it->second;
}

at::Tensor SafetensorsFile::tensor(const std::string& name) const {
  const auto& e = entry(name);
  const uint8_t* p = data_ + e.begin;
  const auto opts = at::TensorOptions().dtype(e.dtype);
  if (reinterpret_cast<uintptr_t>(p) % c10::elementSize(e.dtype) != 0) {  // unaligned: copy out
    at::Tensor t = at::empty(e.shape, opts);
    // An empty tensor has no storage (data_ptr() is null), and memcpy from or to null is undefined even for 0
    // bytes (UBSan, rho_tests under scripts/sanitize.sh).
    if (e.end > e.begin) std::memcpy(t.data_ptr(), p, e.end - e.begin);
    return t;
  }
  auto keep = file_;
  return at::from_blob(const_cast<uint8_t*>(p), e.shape, [keep](void*) {}, opts);
}

void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  std::vector<std::pair<std::string, at::Tensor>> sorted;
  for (const auto& [name, t] : tensors) sorted.emplace_back(name, t.detach().to(at::kCPU).contiguous());
  std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  nlohmann::ordered_json header;
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& [name, t] : sorted) {
    if (header.contains(name)) throw Error(fmt::format("{}: tensor name '{}' given twice", path, name));
    const uint64_t nbytes = t.numel() * t.element_size();
    header[name] = {{"dtype", safetensors_dtype_name(t.scalar_type())},
                    {"shape", t.sizes().vec()},
                    {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // keeps the data section 8-byte aligned
  const uint64_t len = text.size();
  AtomicFileWriter w(path);
  w.write(&len, 8);
  w.write(text.data(), text.size());
  for (const auto& [name, t] : sorted) w.write(t.data_ptr(), t.numel() * t.element_size());
  w.commit();
}

}  // namespace rho
