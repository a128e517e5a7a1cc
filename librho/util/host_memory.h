#pragma once
// keep_host_heap(): malloc settings for LibTorch's CPU tensors. A CPU training, scoring or decoding loop allocates
// and frees the same tensors at every step, through malloc. By default glibc gives the top of its heap back to the
// system as soon as a few MB of it are free, so each step faults the same pages in again: on a 2-core CPU a small
// model's training step spent a quarter of its time in the kernel that way (docs/performance.md, "Host memory").
// With keep_host_heap(), malloc keeps what is freed for the next step: blocks up to 32 MiB come from its heap, and
// up to 1 GiB free at the heap's top stays with the process. Larger blocks are still mapped and unmapped each time,
// as before.
//
// Process-wide, so the library never calls it itself: the tools that run a model call it first thing, and a
// program that links librho may. Nothing is changed (false) where malloc is not glibc's, or where malloc's own
// settings are given in the environment (MALLOC_*_ variables, or GLIBC_TUNABLES naming glibc.malloc): those win.
namespace rho {

bool keep_host_heap();

}  // namespace rho
