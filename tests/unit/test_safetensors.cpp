#include <ATen/ATen.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <fstream>

#include "helpers.h"
#include "librho/io/safetensors.h"
#include "librho/util/error.h"
#include "librho/util/files.h"

using Catch::Matchers::Contains;

namespace {
void write_raw(const std::string& path, const std::string& header, size_t data_bytes) {
  std::ofstream f(path, std::ios::binary);
  const uint64_t n = header.size();
  f.write(reinterpret_cast<const char*>(&n), 8);
  f << header << std::string(data_bytes, '\0');
}
}  // namespace

TEST_CASE("safetensors: round trip of every dtype, metadata and name order", "[safetensors]") {
  rho::test::TempDir dir;
  at::manual_seed(0);
  std::vector<std::pair<std::string, at::Tensor>> ts = {
      {"b.f32", at::randn({3, 5})},
      {"a.bf16", at::randn({7}).to(at::kBFloat16)},
      {"c.f16", at::randn({2, 2, 2}).to(at::kHalf)},
      {"d.i64", at::arange(10)},
      {"e.u16", at::arange(100, 120).to(at::kUInt16)},
      {"f.empty", at::empty({0, 4})},
      {"g.scalar", at::tensor(3.5)},
  };
  const auto path = dir.str("t.safetensors");
  rho::save_safetensors(path, ts, {{"format", "pt"}});
  auto f = rho::SafetensorsFile::open(path);
  CHECK(f.names().size() == ts.size());
  CHECK(f.metadata().at("format") == "pt");
  for (const auto& [name, t] : ts) {
    auto u = f.tensor(name);
    CHECK(u.scalar_type() == t.scalar_type());
    CHECK(u.sizes() == t.sizes());
    CHECK(at::equal(u.to(at::kFloat), t.to(at::kFloat)));
  }
  CHECK_THROWS_WITH(f.tensor("nope"), Contains("no tensor named 'nope'"));
}

TEST_CASE("safetensors: truncated and malformed files are rejected with file and tensor named", "[safetensors]") {
  rho::test::TempDir dir;
  const auto good = dir.str("good.safetensors");
  rho::save_safetensors(good, {{"w", at::ones({64, 64})}});
  const auto bytes = rho::read_text_file(good);

  const auto cut = dir.str("cut.safetensors");
  rho::write_file_atomic(cut, bytes.substr(0, bytes.size() - 100));
  CHECK_THROWS_WITH(rho::SafetensorsFile::open(cut), Contains("cut.safetensors") && Contains("tensor 'w'") &&
                                                           Contains("truncated"));
  const auto tiny = dir.str("tiny.safetensors");
  rho::write_file_atomic(tiny, std::string("abc"));
  CHECK_THROWS_WITH(rho::SafetensorsFile::open(tiny), Contains("tiny.safetensors") && Contains("not a safetensors"));

  const auto huge = dir.str("huge.safetensors");
  std::string h = bytes;
  const uint64_t big = 1ull << 40;
  std::memcpy(&h[0], &big, 8);
  rho::write_file_atomic(huge, h);
  CHECK_THROWS_WITH(rho::SafetensorsFile::open(huge), Contains("bad safetensors header length"));

  const auto p = dir.str("x.safetensors");
  write_raw(p, "{\"w\": {\"dtype\": \"F32\", \"shape\": [2, 2], \"data_offsets\": [0, 12]}}", 16);
  CHECK_THROWS_WITH(rho::SafetensorsFile::open(p), Contains("tensor 'w'") && Contains("needs 16 bytes"));
  write_raw(p, "{\"w\": {\"dtype\": \"Q4\", \"shape\": [2], \"data_offsets\": [0, 2]}}", 16);
  CHECK_THROWS_WITH(rho::SafetensorsFile::open(p), Contains("unsupported dtype"));
  write_raw(p, "{\"w\": {\"dtype\": \"F32\", \"shape\": [-2], \"data_offsets\": [0, 8]}}", 16);
  CHECK_THROWS_WITH(rho::SafetensorsFile::open(p), Contains("non-integer or negative"));
  write_raw(p, "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}, "
               "\"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [4, 12]}}", 16);
  CHECK_THROWS_WITH(rho::SafetensorsFile::open(p), Contains("overlap"));
  write_raw(p, "{\"w\": {\"dtype\": \"F32\", \"shape\": [2]", 16);
  CHECK_THROWS_WITH(rho::SafetensorsFile::open(p), Contains("invalid JSON"));
  write_raw(p, "[1, 2]", 16);
  CHECK_THROWS_WITH(rho::SafetensorsFile::open(p), Contains("not a JSON object"));
}

TEST_CASE("atomic writes never leave a partial file under the final name", "[files]") {
  rho::test::TempDir dir;
  const auto path = dir.str("keep.txt");
  rho::write_file_atomic(path, std::string("good"));
  {
    rho::AtomicFileWriter w(path);
    w.write("bro", 3);
    // destroyed without commit: an interrupted write
  }
  CHECK(rho::read_text_file(path) == "good");
  CHECK(std::distance(std::filesystem::directory_iterator(dir.path), {}) == 1);  // no stray temporary
}
