#include "helpers.h"

#include <torch/cuda.h>
#include <unistd.h>

#include <atomic>
#include <iostream>

namespace rho::test {

TempDir::TempDir() {
  static std::atomic<int> counter{0};
  path = std::filesystem::temp_directory_path() / ("rho_test_" + std::to_string(::getpid()) + "_" +
                                                   std::to_string(counter++));
  std::filesystem::remove_all(path);
  std::filesystem::create_directories(path);
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
}

std::string source_path(const std::string& relative) { return std::string(RHO_SOURCE_DIR) + "/" + relative; }

bool cuda_or_skip() {
  if (torch::cuda::is_available()) return true;
  WARN("SKIPPED: no CUDA device on this machine (test tagged [cuda])");
  std::cout << "SKIPPED [cuda]: no CUDA device\n";
  return false;
}

}  // namespace rho::test
