#pragma once
// Shared test helpers: scratch directories, the source tree, and CUDA skipping.
#include <catch2/catch.hpp>
#include <filesystem>
#include <string>

namespace rho::test {

// A fresh directory under the build's temp area, removed at scope exit.
struct TempDir {
  std::filesystem::path path;
  TempDir();
  ~TempDir();
  std::string str(const std::string& child = "") const { return child.empty() ? path.string() : (path / child).string(); }
};

std::string source_path(const std::string& relative);  // a file of the source tree

// For tests tagged [cuda]: false (and a printed reason) when no CUDA device is present.
bool cuda_or_skip();

}  // namespace rho::test
