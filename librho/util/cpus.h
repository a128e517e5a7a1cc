#pragma once
// How many CPUs this process may use, for the default number of worker threads or processes.
#include <sched.h>

#include <algorithm>
#include <cstdint>
#include <thread>

namespace rho {

// The CPUs in this process's affinity mask (which containers, taskset and SLURM's cpu binding narrow), at least 1;
// where the mask cannot be read, the machine's hardware threads.
inline int64_t usable_cpus() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

}  // namespace rho
