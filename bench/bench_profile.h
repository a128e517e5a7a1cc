#pragma once
// Kineto profile of one region (CPU operators and, on CUDA, kernels, copies and runtime calls), saved as a Chrome
// trace that bench/profile_summary.py turns into the top kernels, host synchronisations and copies per step.
//   rho::bench::profile_to(path, dev, [&] { ...one step... });
#include <torch/csrc/autograd/profiler_kineto.h>

#include <functional>
#include <string>

#include "bench/bench_common.h"

namespace rho::bench {

inline void profile_to(const std::string& path, const at::Device& dev, const std::function<void()>& region) {
  namespace prof = torch::profiler::impl;
  const prof::ProfilerConfig config(prof::ProfilerState::KINETO, /*report_input_shapes=*/false,
                                    /*profile_memory=*/false);
  std::set<prof::ActivityType> activities{prof::ActivityType::CPU};
  if (dev.is_cuda()) activities.insert(prof::ActivityType::CUDA);
  torch::autograd::profiler::prepareProfiler(config, activities);
  sync(dev);
  torch::autograd::profiler::enableProfiler(config, activities);
  region();
  sync(dev);
  torch::autograd::profiler::disableProfiler()->save(path);
}

}  // namespace rho::bench
