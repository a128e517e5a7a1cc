#pragma once
// Shared by the fuzz harnesses: invariant checks that abort (libFuzzer then saves the input), and scratch files.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace rho_fuzz {

// A broken invariant is a finding: print it and abort, so that libFuzzer keeps the input as a crash.
inline void check(bool ok, const std::string& what) {
  if (ok) return;
  std::fprintf(stderr, "fuzz invariant broken: %s\n", what.c_str());
  std::abort();
}

inline std::string& scratch_dir() {
  static std::string dir;
  return dir;
}

// A file in a per-process scratch folder (under $RHO_FUZZ_TMP, else /dev/shm, else /tmp), removed at exit.
inline std::string scratch_path(const std::string& name) {
  if (scratch_dir().empty()) {
    namespace fs = std::filesystem;
    const char* env = std::getenv("RHO_FUZZ_TMP");
    const fs::path base = env ? fs::path(env) : fs::exists("/dev/shm") ? fs::path("/dev/shm") : fs::path("/tmp");
    scratch_dir() = (base / ("rho_fuzz." + std::to_string(::getpid()))).string();
    fs::create_directories(scratch_dir());
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(scratch_dir(), ec);
    });
  }
  return scratch_dir() + "/" + name;
}

inline void write_scratch(const std::string& path, const uint8_t* data, size_t size) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  check(static_cast<bool>(out), "cannot write the scratch file " + path);
}

}  // namespace rho_fuzz
