#pragma once
// keep_host_heap(): malloc settings for LibTorch's CPU tensors. A CPU training, scoring or decoding loop allocates
// and frees the same tensors at every step, through malloc. By default glibc gives the top of its heap back to the
// system once more than its trim threshold is free there (128 KiB at first; glibc raises it to twice the largest
// mapped block freed so far, at most 64 MiB), so each step faults the same pages in again: on a 2-core CPU a small
// model's training step spent a quarter of its time in the kernel that way (docs/performance.md, "Host memory").
// With keep_host_heap(), malloc keeps what is freed for the next step: blocks below 32 MiB come from its heaps, and
// the main heap keeps up to 1 GiB free at its top (other threads' heaps keep their top too, and still give back a
// heap that empties). Larger blocks are still mapped and unmapped each time, as before.
//
// Process-wide, so the library never calls it itself: the tools call it for CPU runs, and a program that links
// librho may. Returns whether glibc's mallopt took the settings. Nothing is changed (false) where the C library is
// not glibc, where RHO_KEEP_HOST_HEAP=0 is set, or where the same malloc settings are given in the environment
// (MALLOC_TRIM_THRESHOLD_, MALLOC_MMAP_THRESHOLD_, MALLOC_TOP_PAD_, MALLOC_MMAP_MAX_, or those tunables in
// GLIBC_TUNABLES): those win. (Under a malloc of its own, such as a preloaded tcmalloc or jemalloc, the settings go
// to glibc's unused malloc and change nothing.)
namespace rho {

bool keep_host_heap();

}  // namespace rho
