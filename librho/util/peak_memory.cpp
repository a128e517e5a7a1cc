#include "librho/util/peak_memory.h"

#include <c10/core/Allocator.h>
#include <c10/util/ThreadLocalDebugInfo.h>
#ifdef RHO_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

#include <algorithm>
#include <atomic>
#include <optional>

namespace rho {

// Keeps a running sum of the sizes c10's CPU allocator reports (negative on free) and its maximum.
struct PeakMemoryCpuReporter : c10::MemoryReportingInfoBase {
  std::atomic<int64_t> current{0}, peak{0};
  void reportMemoryUsage(void*, int64_t alloc_size, size_t, size_t, c10::Device device) override {
    if (device.type() != c10::DeviceType::CPU) return;
    const int64_t now = current.fetch_add(alloc_size) + alloc_size;
    int64_t seen = peak.load();
    while (now > seen && !peak.compare_exchange_weak(seen, now)) {
    }
  }
  bool memoryProfilingEnabled() const override { return true; }
};

struct PeakMemory::Impl {
  c10::Device device{c10::kCPU};
  std::shared_ptr<PeakMemoryCpuReporter> cpu;
  std::optional<c10::DebugInfoGuard> guard;
  int64_t cuda_start = 0;
  c10::DeviceIndex index() const { return device.has_index() ? device.index() : c10::DeviceIndex(0); }
};

PeakMemory::PeakMemory(c10::Device device) : impl_(std::make_unique<Impl>()) {
  impl_->device = device;
  if (device.is_cpu()) {
    impl_->cpu = std::make_shared<PeakMemoryCpuReporter>();
    impl_->guard.emplace(c10::DebugInfoKind::PROFILER_STATE, impl_->cpu);
  }
#ifdef RHO_WITH_CUDA
  if (device.is_cuda()) {
    c10::cuda::CUDACachingAllocator::resetPeakStats(impl_->index());
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(impl_->index());
    impl_->cuda_start = stats.allocated_bytes[0].current;  // 0: the aggregate over pool kinds
  }
#endif
}

PeakMemory::~PeakMemory() = default;

int64_t PeakMemory::peak() const {
  if (impl_->cpu) return impl_->cpu->peak.load();
#ifdef RHO_WITH_CUDA
  if (impl_->device.is_cuda()) {
    return c10::cuda::CUDACachingAllocator::getDeviceStats(impl_->index()).allocated_bytes[0].peak - impl_->cuda_start;
  }
#endif
  return 0;
}

int64_t PeakMemory::current() const {
  if (impl_->cpu) return impl_->cpu->current.load();
#ifdef RHO_WITH_CUDA
  if (impl_->device.is_cuda()) {
    return c10::cuda::CUDACachingAllocator::getDeviceStats(impl_->index()).allocated_bytes[0].current -
           impl_->cuda_start;
  }
#endif
  return 0;
}

}  // namespace rho
