#include "librho/util/host_memory.h"

#include <cstdlib>
#include <cstring>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace rho {
namespace {
// Whether the environment gives malloc's thresholds itself, or asks for glibc's defaults.
bool malloc_settings_given() {
  if (const char* keep = std::getenv("RHO_KEEP_HOST_HEAP"); keep && std::strcmp(keep, "0") == 0) return true;
  for (const char* name : {"MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_"})
    if (std::getenv(name)) return true;
  if (const char* tunables = std::getenv("GLIBC_TUNABLES"))
    for (const char* name : {"glibc.malloc.trim_threshold", "glibc.malloc.mmap_threshold", "glibc.malloc.top_pad",
                             "glibc.malloc.mmap_max"})
      if (std::strstr(tunables, name)) return true;
  return false;
}
}  // namespace

bool keep_host_heap() {
#if defined(__GLIBC__)
  if (malloc_settings_given()) return false;
  // 32 MiB: as far as glibc's own adjustment would raise the threshold on 64-bit systems (DEFAULT_MMAP_THRESHOLD_MAX),
  // from the first block; larger ones (a big model's logits) stay mapped, so their memory still goes back to the
  // system when freed. Setting either value also stops glibc from moving both by itself.
  constexpr int kMmapThreshold = 32 << 20;
  constexpr int kTrimThreshold = 1 << 30;
  return mallopt(M_MMAP_THRESHOLD, kMmapThreshold) == 1 && mallopt(M_TRIM_THRESHOLD, kTrimThreshold) == 1;
#else
  return false;
#endif
}

}  // namespace rho
