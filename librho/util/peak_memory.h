#pragma once
// PeakMemory: the most bytes of tensor memory allocated at once on a device while it is alive, above what was
// allocated when it started. On the CPU it counts the allocations of this thread and of the work it hands to
// autograd (through c10's memory-reporting hook, which autograd carries to its threads); on CUDA it reads the
// caching allocator's peak statistics. The trainer measures its first step with it, to check the memory planner
// (librho/model/memory_plan.h) against what a step really allocates.
#include <c10/core/Device.h>

#include <cstdint>
#include <memory>

namespace rho {

class PeakMemory {
 public:
  explicit PeakMemory(c10::Device device);
  ~PeakMemory();
  PeakMemory(const PeakMemory&) = delete;
  PeakMemory& operator=(const PeakMemory&) = delete;
  int64_t peak() const;     // bytes above the allocation at construction
  int64_t current() const;  // bytes allocated now above the allocation at construction (may be negative)

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace rho
