#pragma once
// safetensors: a memory-mapped reader and an atomic writer for Hugging Face's tensor file format
// (8-byte little-endian header length, JSON header, raw little-endian data).
#include <ATen/core/Tensor.h>

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace rho {

class MappedFile;

struct SafetensorsEntry {
  at::ScalarType dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte offsets into the data section
};

class SafetensorsFile {
 public:
  // Maps the file and checks the whole header; throws rho::Error naming the file (and tensor) on any defect.
  static SafetensorsFile open(const std::string& path);
  // Parses and checks a header against a data section of `data_size` bytes (exposed for the fuzzer).
  static std::map<std::string, SafetensorsEntry> parse_header(const std::string& json, uint64_t data_size,
                                                              const std::string& source,
                                                              std::map<std::string, std::string>* metadata);

  const std::string& path() const;
  std::vector<std::string> names() const;
  bool contains(const std::string& name) const { return entries_.count(name) > 0; }
  const SafetensorsEntry& entry(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // A CPU tensor viewing the mapped data (read-only: copy before writing to it).
  at::Tensor tensor(const std::string& name) const;

 private:
  std::shared_ptr<MappedFile> file_;
  const uint8_t* data_ = nullptr;  // start of the data section
  std::map<std::string, SafetensorsEntry> entries_;
  std::map<std::string, std::string> metadata_;
};

// Writes tensors (any device, made contiguous on CPU) to `path` atomically, in name order.
void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

std::string safetensors_dtype_name(at::ScalarType t);

}  // namespace rho
