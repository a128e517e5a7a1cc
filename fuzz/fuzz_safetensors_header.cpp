// libFuzzer target: the safetensors header parser and the whole-file reader.
// Input: a safetensors file (8-byte little-endian header length, JSON header, data).
//  1. parse_header on the JSON part against the data size the file gives; every accepted entry must lie inside the
//     data section, hold exactly shape x element size bytes (checked in 128-bit arithmetic), have dimensions that
//     fit int64, and not overlap another;
//  2. SafetensorsFile::open on the bytes as a file, then every tensor read and summed (touches every byte).
// Rejection must be a rho::Error; anything else escaping, a sanitizer report or a broken invariant is a finding.
#include <ATen/core/Tensor.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <vector>

#include "fuzz/fuzz_util.h"
#include "librho/io/safetensors.h"
#include "librho/util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using rho_fuzz::check;
  if (size >= 8) {
    uint64_t header_len = 0;
    std::memcpy(&header_len, data, 8);
    const uint64_t rest = size - 8;
    const uint64_t hl = std::min<uint64_t>(header_len, rest);
    const std::string header(reinterpret_cast<const char*>(data) + 8, hl);
    const uint64_t data_size = rest - hl;
    try {
      std::map<std::string, std::string> meta;
      const auto entries = rho::SafetensorsFile::parse_header(header, data_size, "fuzz", &meta);
      std::vector<std::pair<uint64_t, uint64_t>> spans;
      for (const auto& [name, e] : entries) {
        unsigned __int128 numel = 1;
        for (int64_t d : e.shape) {
          check(d >= 0, "tensor '" + name + "': negative dimension accepted");
          numel *= static_cast<unsigned __int128>(d);
          if (numel > (static_cast<unsigned __int128>(1) << 64)) numel = static_cast<unsigned __int128>(1) << 64;
        }
        const unsigned __int128 bytes = numel * c10::elementSize(e.dtype);
        check(e.begin <= e.end && e.end <= data_size, "tensor '" + name + "': data_offsets outside the data");
        check(bytes == e.end - e.begin, "tensor '" + name + "': shape x element size differs from its byte span");
        if (e.end > e.begin) spans.emplace_back(e.begin, e.end);
      }
      std::sort(spans.begin(), spans.end());
      for (size_t i = 1; i < spans.size(); ++i) check(spans[i - 1].second <= spans[i].first, "overlapping tensors");
    } catch (const rho::Error&) {
    }
  }
  const auto path = rho_fuzz::scratch_path("input.safetensors");
  rho_fuzz::write_scratch(path, data, size);
  try {
    const auto f = rho::SafetensorsFile::open(path);
    for (const auto& name : f.names()) {
      const at::Tensor t = f.tensor(name);
      check(t.numel() * static_cast<int64_t>(t.element_size()) ==
                static_cast<int64_t>(f.entry(name).end - f.entry(name).begin),
            "tensor '" + name + "': its view's size differs from its byte span");
      (void)t.clone();  // touches every byte of the view
    }
  } catch (const rho::Error&) {
  }
  return 0;
}
