#pragma once
// The memory planner behind `rho_model plan`: per-device bytes of one training step of a librho model, by
// category, from the model's shape and the run's settings, before any hardware is bought or booked.
//
// What it counts is what librho's own code allocates (docs/scaling.md derives each term):
//   weights     fp32 master weights (a shard of each layer under sharding parameters, plus the root unit), and
//               under `parameters` the gathered layers in the compute dtype (the current one and the prefetched
//               next); under bf16 autocast without `parameters`, autocast's bf16 copies of the matrices, held
//               from forward to backward;
//   gradients   fp32, whole (none, optimizer) or this rank's shard (gradients, parameters), plus the gradients
//               of the unit being reduced;
//   optimizer   AdamW's two fp32 moments, whole or a shard;
//   activations the tensors autograd keeps from forward to backward, per layer (or only each layer's input with
//               activation checkpointing, plus one layer recomputed at a time): forward_activation_bytes;
//   lm_head     the chunked cross-entropy's logits (rows_per_chunk rows at a time, fp32, and bf16 under
//               autocast) with their gradient, and the hidden states' gradient;
//   buffers     communication: gradient buckets (none); under sharding the reduce-scatter inputs (at most three
//               units in flight) are counted with the gradients.
// Attention is planned as the fused kernels keep it: flash or cuDNN in bf16 on CUDA and the CPU's kernel keep the
// grouped keys and values; fp32 on CUDA runs the memory-efficient kernel on keys and values copied to every head
// (attention_expands_kv, librho/model/config.h).
// Validated against PeakMemory on the CPU: the activations to 0.5% by ctest [memory], the whole step by ctest
// dist_cpu (each level, fp32 and bf16, with and without activation checkpointing: within 10%). Not yet validated
// on a GPU for the current layer (docs/scaling.md); the allocator's caching and fragmentation come on top.
#include <cstdint>
#include <string>
#include <vector>

#include "librho/dist/sharding.h"
#include "librho/model/config.h"

namespace rho {

struct MemoryPlanOptions {
  int64_t world_size = 1;     // data-parallel ranks (GPUs)
  int64_t seq_len = 2048;     // tokens per sequence (the model's input length)
  int64_t micro_batch = 1;    // sequences per rank per micro-batch (data.batch_size)
  int64_t grad_accum = 1;
  Sharding sharding = Sharding::None;
  bool bf16 = true;           // bf16 autocast (train.precision auto on CUDA), else fp32
  bool cuda = true;           // a CUDA device (else the CPU): which attention kernel runs (attention_expands_kv)
  bool activation_checkpointing = false;
  int64_t rows_per_chunk = 4096;  // the LM head's chunk (LlamaImpl::token_loss)
  // Gloo (CPU) reduce-scatters through an all-reduce of a copy of the whole input: one more unit-sized buffer per
  // reduction in flight than NCCL's.
  bool gloo = false;
  // One process in a group of one (RHO_PROCESS_GROUP=always): its collectives run through the backend, with the
  // buffers of a world size above 1.
  bool group_of_one = false;
  double device_gib = 80;         // the memory of one device, for "fits"
};

struct MemoryPlan {
  struct Item {
    std::string category, detail;
    int64_t bytes = 0;
  };
  std::vector<Item> items;     // in the order above
  int64_t parameters = 0;      // the model's parameter count
  int64_t micro_batch = 0;     // the micro-batch planned for
  int64_t total() const;       // the step's peak per device
  bool fits(double device_gib) const;
  std::string table(const MemoryPlanOptions& o) const;  // a Markdown table and a verdict
  std::string json() const;  // parameters, micro_batch, total, items
};

MemoryPlan plan_memory(const LlamaConfig& config, const MemoryPlanOptions& options);

// The largest micro-batch (sequences per device) whose step fits o.device_gib, the other options as given; 0 when
// not even one sequence fits.
int64_t largest_micro_batch(const LlamaConfig& config, MemoryPlanOptions options);

// Bytes the forward of one micro-batch leaves allocated for its backward, autocast's weight copies aside: every
// layer's saved tensors (under activation checkpointing, each layer's input), the final norm's and the LM head's,
// and the per-token losses. The activations of plan_memory; ctest [memory] measures it exactly on the CPU.
int64_t forward_activation_bytes(const LlamaConfig& config, const MemoryPlanOptions& options);

}  // namespace rho
