#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>

#include "librho/util/host_memory.h"

// As the tools do for CPU runs (most of the tests' steps run on the CPU): freed tensor memory is reused
// (librho/util/host_memory.h).
[[maybe_unused]] static const bool kHostHeapKept = rho::keep_host_heap();
