#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>

#include "librho/util/host_memory.h"

// As the tools do: the tests' CPU steps reuse freed tensor memory (librho/util/host_memory.h).
[[maybe_unused]] static const bool kHostHeapKept = rho::keep_host_heap();
