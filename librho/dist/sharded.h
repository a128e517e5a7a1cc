#pragma once
// Sharded data parallelism (ZeRO / FSDP) over a DistContext, chosen by train.sharding:
//
//   optimizer   (ZeRO-1) AdamW's state and update are split over the ranks. Every rank keeps the full weights
//               and the full gradient, accumulated locally over the step's micro-batches; the last backward
//               reduce-scatters it, each rank steps its shard, and the updated shards are all-gathered.
//   gradients   (ZeRO-2) as optimizer, but every micro-batch's gradients are reduce-scattered as backward
//               produces them and only this rank's shard is kept (accumulated in fp32).
//   parameters  (ZeRO-3 / FSDP) as gradients, and a rank keeps only its shard of the fp32 weights. A decoder
//               layer's weights are all-gathered (in the compute dtype: bf16 under autocast) just before the
//               layer runs, in forward and again in backward, with the next layer's gather in flight while the
//               current layer computes, and freed after it (the last layer is kept from its forward to its
//               backward, which comes next). gather_stats() counts the gathers and those prefetched.
//
// Units. The model's parameters form units, each gathered and reduced as one flat buffer: one unit per decoder
// layer, and a root unit holding the embedding, the final norm and lm_head. The root is used at both ends of the
// model (and the embedding twice when tied), so it stays gathered, in fp32; under `parameters` it is re-gathered
// after each optimizer step. A unit's flat buffer (its parameters in registration order, zero-padded to a
// multiple of the world size) splits into world_size equal shards; rank r owns shard r of every unit, and its
// AdamW state (exp_avg, exp_avg_sq: fp32, one shard each) and the fp32 master weights of that shard. The model's
// parameter tensors become views into the unit's gathered buffer, so the model's own code runs unchanged.
//
// Collective order. Every rank issues the same collectives in the same order: forward and backward gathers follow
// the layers, and reduce-scatters are launched in a fixed unit order. That holds because every rank runs the same
// model on the same shapes, so autograd visits the layers in the same order and every parameter gets a gradient in
// every backward on every rank (a unit whose gradients stayed incomplete would be reduced at after_backward() on
// some ranks only). Evaluation runs as many forwards on every rank (Trainer pads a rank's share).
//
// Exactness. AdamW is elementwise, so stepping shards is the same arithmetic as stepping whole tensors; the sums
// over ranks are reduce-scatters instead of all-reduces (a different order of the same fp32 additions), and the
// gradient norm is one all-reduce of the ranks' sums of squares. tests/scripts/test_dist.py checks each level
// against one process over the same global batch.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "librho/dist/context.h"
#include "librho/dist/sharding.h"
#include "librho/model/llama.h"

namespace rho {

struct ShardedAdamWOptions {
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weight_decay = 0;
  bool decay_norms_and_embeddings = false;  // as adamw_groups: by default no decay on norms and embeddings
};

// Bytes this rank holds, by category (the memory test and the planner's check).
struct ShardedMemory {
  int64_t weights = 0;    // fp32 master shards and gathered buffers allocated now
  int64_t gradients = 0;  // gradient shards and full gradients allocated now
  int64_t optimizer = 0;  // AdamW's exp_avg and exp_avg_sq shards and step count
  int64_t buffers = 0;    // communication buffers kept between steps (unsharded: the all-reduce buckets)
};

// The parameter all-gathers of decoder layers (level parameters) since the last reset_gather_stats(): how many were
// issued, how many were already in flight when their layer asked for its weights (prefetched: the transfer ran
// while the previous layer computed), and the host seconds spent waiting for gathers. On the CPU (Gloo) the wait
// is the part of the transfers compute did not hide; with NCCL a wait only orders the CUDA streams, so it is near
// zero and says nothing of the overlap on the device.
struct GatherStats {
  int64_t issued = 0, prefetched = 0;
  double wait_seconds = 0;
};

class ShardedModel : public LayerHooks {
 public:
  // Takes over `model` (already on the process group's device, identical on every rank): its parameters become
  // views into the units' buffers. compute_dtype: the dtype layers are gathered in under `parameters`.
  ShardedModel(Llama model, DistContext& dist, Sharding level, at::ScalarType compute_dtype, ShardedAdamWOptions adam);
  ~ShardedModel() override;
  ShardedModel(const ShardedModel&) = delete;
  ShardedModel& operator=(const ShardedModel&) = delete;

  Sharding level() const { return level_; }
  const std::vector<ShardedUnitLayout>& layout() const { return layout_; }

  // Around each micro-batch's backward; `last`: the step's last micro-batch.
  void before_backward(bool last);
  void after_backward();
  // The global gradient 2-norm (a device scalar), the shards scaled by min(1, max_norm / (norm + 1e-6)).
  at::Tensor clip_grad_norm(double max_norm);
  // AdamW on this rank's shards (nothing changes where found_inf is 1), then the weights are shared again;
  // gradients are cleared.
  void step(double lr, const at::Tensor& found_inf);

  // This rank's checkpoint tensors: per unit "<unit>.param", "<unit>.exp_avg", "<unit>.exp_avg_sq" (the owned
  // part of the unpadded buffer, fp32) and "step".
  std::vector<std::pair<std::string, at::Tensor>> shard_state() const;
  // Loads shards written by `world` ranks: read(q) gives rank q's shard_state() tensors (called once per q, in
  // order; each may be released before the next). A different world size reshards. `source` names the
  // checkpoint in errors.
  void load_shard_state(int64_t world, const std::function<std::vector<std::pair<std::string, at::Tensor>>(int64_t)>& read,
                        const std::string& source);
  // Collective: unit u's parameters as full fp32 CPU tensors on rank 0 (empty elsewhere).
  std::vector<std::pair<std::string, at::Tensor>> gather_unit(size_t u);

  ShardedMemory memory() const;
  const GatherStats& gather_stats() const { return gather_stats_; }
  void reset_gather_stats() { gather_stats_ = GatherStats{}; }

  // LayerHooks (parameters level).
  void before_layer(size_t layer) override;
  at::Tensor after_layer(size_t layer, const at::Tensor& output) override;

 private:
  struct Unit;
  void group_parameters();
  void flatten_unit(size_t u);
  void make_adamw_views(size_t u);
  void ensure_gathered(size_t u);
  void start_gather(size_t u);
  void release(size_t u);
  void param_ready(size_t u);
  void launch_ready_units();
  void finish_reduce(size_t u);
  void share_weights();
  friend struct ShardedGradHook;

  Llama model_;
  DistContext& dist_;
  Sharding level_;
  at::ScalarType compute_dtype_;
  ShardedAdamWOptions adam_;
  std::vector<ShardedUnitLayout> layout_;
  std::vector<std::unique_ptr<Unit>> units_;
  std::vector<size_t> reduce_order_;  // units in the order backward completes them: layers last to first, root
  size_t next_reduce_ = 0, next_finish_ = 0;  // in reduce_order_: the next unit to launch, and to finish
  static constexpr size_t kReducesInFlight = 2;
  bool armed_ = false;
  at::Tensor step_count_;  // AdamW's step (float scalar on the device)
  GatherStats gather_stats_;
};

}  // namespace rho
