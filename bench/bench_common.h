#pragma once
// Shared by the C++ benchmarks: peak memory (the CUDA caching allocator's peak, or the growth of the process's
// peak resident set on CPU), device synchronisation,
// wall time, simple "--key value" arguments, and running this binary again in another mode.
#include <ATen/ATen.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <stdexcept>
#include <string>

#ifdef RHO_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#endif

namespace rho::bench {

// A field of /proc/self/status in bytes (VmRSS: resident now; VmHWM: peak resident).
inline double proc_status_bytes(const std::string& field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(field + ":", 0) == 0) return std::stod(line.substr(field.size() + 1)) * 1024.0;
  return -1;
}

// Linux resets the peak resident set to the current one on "5" written to clear_refs, so one process can
// measure several paths one after another.
inline void reset_peak_rss() { std::ofstream("/proc/self/clear_refs") << "5"; }

inline void sync(const at::Device& d) {
#ifdef RHO_WITH_CUDA
  if (d.is_cuda()) c10::cuda::device_synchronize();
#endif
}

// Peak memory used from construction on, over what was in use then.
class PeakMemory {
 public:
  explicit PeakMemory(const at::Device& d) : device_(d) {
#ifdef RHO_WITH_CUDA
    if (d.is_cuda()) {
      at::empty({1}, at::TensorOptions().device(d));  // initialises CUDA and its allocator if nothing has yet
      sync(d);
      auto* alloc = c10::cuda::CUDACachingAllocator::get();
      alloc->resetPeakStats(d.index() < 0 ? 0 : d.index());
      base_ = stat().current;
      return;
    }
#endif
    reset_peak_rss();
    base_ = proc_status_bytes("VmRSS");
  }
  double bytes() const {
#ifdef RHO_WITH_CUDA
    if (device_.is_cuda()) {
      sync(device_);
      return stat().peak - base_;
    }
#endif
    return proc_status_bytes("VmHWM") - base_;
  }

 private:
#ifdef RHO_WITH_CUDA
  c10::CachingAllocator::Stat stat() const {
    const auto s = c10::cuda::CUDACachingAllocator::get()->getDeviceStats(device_.index() < 0 ? 0 : device_.index());
    return s.allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)];
  }
#endif
  at::Device device_;
  double base_ = 0;
};

class Timer {
 public:
  double seconds() const { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count(); }

 private:
  std::chrono::steady_clock::time_point t0_ = std::chrono::steady_clock::now();
};

// "--key value" pairs; a lone "--flag" gets "1". With `usage`: --help or -h prints it and exits 0, and a key the
// usage does not name ("--key") is an error (so a typo never runs the whole benchmark with defaults).
class Args {
 public:
  Args(int argc, char** argv, const char* usage = nullptr) {
    for (int i = 1; i < argc; ++i) {
      std::string k = argv[i];
      if (usage && (k == "--help" || k == "-h")) {
        std::printf("%s", usage);
        std::exit(0);
      }
      if (k.rfind("--", 0) != 0) throw std::runtime_error("unexpected argument " + k);
      if (usage && k != "--mode" && std::string(usage).find(k + " ") == std::string::npos &&
          std::string(usage).find(k + "]") == std::string::npos)
      {
        std::fprintf(stderr, "%s: unknown option %s\n%s", argv[0], k.c_str(), usage);
        std::exit(2);
      }
      k = k.substr(2);
      values_[k] = i + 1 < argc && std::string(argv[i + 1]).rfind("--", 0) != 0 ? argv[++i] : "1";
    }
  }
  std::string str(const std::string& k, const std::string& def) const {
    auto it = values_.find(k);
    return it == values_.end() ? def : it->second;
  }
  int64_t num(const std::string& k, int64_t def) const { return std::stoll(str(k, std::to_string(def))); }
  bool has(const std::string& k) const { return values_.count(k) > 0; }
  // Every argument but `skip`, to pass on to a child run of the same binary.
  std::string pass_on(const std::string& skip) const {
    std::string s;
    for (const auto& [k, v] : values_)
      if (k != skip) s += " --" + k + " '" + v + "'";
    return s;
  }

 private:
  std::map<std::string, std::string> values_;
};

// Runs a command and returns its standard output (the child's stderr passes through).
inline std::string run_capture(const std::string& cmd) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) throw std::runtime_error("cannot run " + cmd);
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  if (pclose(p) != 0) throw std::runtime_error("failed: " + cmd);
  return out;
}

}  // namespace rho::bench
