#include "librho/model/memory_plan.h"

#include <fmt/format.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "librho/util/enum_names.h"
#include "librho/util/error.h"

namespace rho {

namespace {

std::string gib(int64_t bytes) {
  const double b = static_cast<double>(bytes);
  return b >= (1 << 30) ? fmt::format("{:.2f} GiB", b / (1 << 30)) : fmt::format("{:.2f} MiB", b / (1 << 20));
}

// Bytes autograd keeps per token of one decoder layer (librho/model/llama.cpp, lean_ops.cpp), by what saves it:
//   each RMSNorm (lean_ops' rms_norm): its fp32 input and one fp32 per token; the projections after it keep its
//     output, shared: fp32, or one copy in the compute dtype under autocast (SharedInput);
//   attention: the rotated queries and keys, the values and the output kept by scaled-dot-product attention
//     (with its log-sum-exp, one fp32 per head); keys and values copied to every query head where attention
//     expands them (attention_expands_kv: fp32 on CUDA with grouped-query attention); o_proj reads the output
//     through a view of the same memory (the fused kernels lay it out [batch, seq, heads, head_dim]); the rotary
//     multiplications keep cos and sin, made once per forward for every layer (rope_bytes);
//   MLP: gate and up (kept by lean_ops' swiglu) and their gated product (kept by down_proj).
int64_t layer_bytes_per_token(const LlamaConfig& c, const MemoryPlanOptions& o) {
  const int64_t h = c.hidden_size, i = c.intermediate_size, d = c.head_size(), cb = o.bf16 ? 2 : 4;
  const int64_t q = c.num_heads * d;
  const bool expanded = attention_expands_kv(c.num_heads, c.num_kv_heads, o.cuda, o.bf16, /*masked=*/false);
  const int64_t kv = expanded ? q : c.num_kv_heads * d;
  const int64_t norms = 2 * (4 * h + 4 + cb * h);
  const int64_t attention = cb * (2 * q + 2 * kv) + 4 * c.num_heads;
  const int64_t mlp = 3 * cb * i;
  return norms + attention + mlp;
}

// Per forward: cos and sin cast once to the compute dtype, kept by every layer's rotary multiplications (under
// activation checkpointing, by every checkpointed layer); none in fp32, where they are views of the tables.
int64_t rope_bytes(const LlamaConfig& c, const MemoryPlanOptions& o) {
  return o.bf16 ? 2 * 2 * o.seq_len * c.head_size() : 0;
}

// One layer's saved tensors for a micro-batch.
int64_t layer_activation_bytes(const LlamaConfig& c, const MemoryPlanOptions& o) {
  return o.seq_len * o.micro_batch * layer_bytes_per_token(c, o);
}

int64_t layer_parameters(const LlamaConfig& c) {
  const int64_t h = c.hidden_size, i = c.intermediate_size, d = c.head_size();
  const int64_t q = c.num_heads * d, kv = c.num_kv_heads * d;
  int64_t n = h * q + 2 * h * kv + q * h + 3 * h * i + 2 * h;
  if (c.qkv_bias()) n += q + 2 * kv;
  if (c.o_bias()) n += h;
  if (c.mlp_bias) n += 2 * i + h;
  return n;
}

}  // namespace

int64_t forward_activation_bytes(const LlamaConfig& c, const MemoryPlanOptions& o) {
  const int64_t h = c.hidden_size, cb = o.bf16 ? 2 : 4;
  const int64_t N = o.seq_len * o.micro_batch;
  // The final norm's fp32 input and one fp32 per token; the LM head's input in the compute dtype and one
  // log-sum-exp per token (linear_cross_entropy); the per-token losses.
  const int64_t head = N * (4 * h + 4 + cb * h + 4 + 4);
  // (Under activation checkpointing no layer is recomputed yet at the end of the forward: that comes in the
  // backward, counted at the later moments of plan_memory.)
  if (o.activation_checkpointing) return c.num_layers * 4 * N * h + rope_bytes(c, o) + head;
  return c.num_layers * layer_activation_bytes(c, o) + rope_bytes(c, o) + head;
}

int64_t largest_micro_batch(const LlamaConfig& c, MemoryPlanOptions o) {
  auto fits = [&](int64_t micro_batch) {
    o.micro_batch = micro_batch;
    return plan_memory(c, o).fits(o.device_gib);
  };
  if (!fits(1)) return 0;
  // The plan grows with the micro-batch: double until it does not fit (or a bound far past any device), then bisect.
  int64_t good = 1, bad = 2;
  for (; fits(bad); bad *= 2) {
    good = bad;
    if (bad >= (int64_t{1} << 30)) return good;
  }
  while (bad - good > 1) {
    const int64_t mid = good + (bad - good) / 2;
    (fits(mid) ? good : bad) = mid;
  }
  return good;
}

int64_t MemoryPlan::total() const {
  int64_t t = 0;
  for (const auto& item : items) t += item.bytes;
  return t;
}

bool MemoryPlan::fits(double device_gib) const { return static_cast<double>(total()) <= device_gib * (1 << 30); }

namespace {
// The element counts plan_memory works with, for one rank.
struct PlanSizes {
  PlanSizes(const LlamaConfig& c, const MemoryPlanOptions& o)
      : W(o.world_size), L(c.num_layers), h(c.hidden_size), V(c.vocab_size), cb(o.bf16 ? 2 : 4),
        N(o.seq_len * o.micro_batch), P_layer(layer_parameters(c)),
        P_root(V * h * (c.tie_word_embeddings ? 1 : 2) + h), P(P_root + L * P_layer),
        grouped(o.world_size > 1 || o.group_of_one), sharded(o.sharding != Sharding::None),
        whole_grads(o.sharding == Sharding::None || o.sharding == Sharding::Optimizer),
        S(sharded ? shard(P_root) + L * shard(P_layer) : P),
        padded(sharded ? (shard(P_root) + L * shard(P_layer)) * W : P) {}
  int64_t shard(int64_t n) const { return (n + W - 1) / W; }

  int64_t W, L, h, V;
  int64_t cb;       // bytes of an activation element (bf16 under autocast, else fp32)
  int64_t N;        // tokens per micro-batch
  int64_t P_layer;  // parameters of one decoder layer, of the root unit (embedding, final norm, lm_head), of all
  int64_t P_root, P;
  bool grouped;      // collectives go through a process group
  bool sharded;      // sharding beyond none
  bool whole_grads;  // every rank keeps whole gradients (none, optimizer)
  int64_t S;         // this rank's elements of every unit (sharded), else P
  int64_t padded;    // elements of all units, padded to whole shards
};

void add_item(MemoryPlan& plan, const char* category, std::string detail, int64_t bytes) {
  if (bytes > 0) plan.items.push_back({category, std::move(detail), bytes});
}

// There for the whole step: the fp32 weights (sharded or whole, plus gathered or autocast copies) and AdamW's moments.
void add_resident(MemoryPlan& plan, const PlanSizes& z, const MemoryPlanOptions& o) {
  const bool shard_weights = o.sharding == Sharding::Parameters;
  if (shard_weights) {
    add_item(plan, "weights", "fp32 root unit (embedding, final norm, lm_head), whole", 4 * z.shard(z.P_root) * z.W);
    add_item(plan, "weights", "fp32 shard of each layer", 4 * z.L * z.shard(z.P_layer));
    add_item(plan, "weights", fmt::format("gathered layers ({}: the current and the next)", o.bf16 ? "bf16" : "fp32"),
             std::min<int64_t>(z.L, 2) * z.cb * z.shard(z.P_layer) * z.W);
  } else {
    add_item(plan, "weights", "fp32, whole", 4 * z.padded);
  }
  add_item(plan, "optimizer", z.sharded ? "AdamW exp_avg + exp_avg_sq, this rank's shard" : "AdamW exp_avg + exp_avg_sq",
           8 * z.S);
  // Under activation checkpointing the forward keeps no copies (it runs without autocast's cache); the recompute
  // makes one layer's.
  if (o.bf16 && !shard_weights)
    add_item(plan, "weights",
             o.activation_checkpointing ? "autocast's bf16 copies of one layer's matrices (the recompute)"
                                        : "autocast's bf16 copies of the layers' matrices, forward to backward",
             2 * (o.activation_checkpointing ? 1 : z.L) * (z.P_layer - 2 * z.h));
}

// The peak comes at one of these moments, whichever needs most:
//   the start of the backward: activations, the LM head's chunk, and the last layer's gradients on their way to
//     the reduction (beyond the activations they replace);
//   sharded, once reductions pile up: the shards and up to three units' reduce-scatter inputs in flight
//     (ShardedModel finishes the oldest beyond two), beside the activations not yet freed
//     (every layer's input under activation checkpointing, plus the layer recomputed);
//   the backward of the model's first layer: every gradient (whole for none and optimizer), that layer's
//     activations (recomputed under activation checkpointing) and its input. (The end of the backward holds
//     the same gradients without those activations, so it is never the peak.)
// Adds the gradients, activations and LM-head items of the largest, and the all-reduce buckets of `none`.
void add_backward_peak(MemoryPlan& plan, const PlanSizes& z, const LlamaConfig& c, const MemoryPlanOptions& o) {
  // Gradients held through the forward of a micro-batch: accumulated whole over the micro-batches (none,
  // optimizer), and the shard (fp32), allocated once.
  const int64_t grads_kept = (z.whole_grads && o.grad_accum > 1 ? 4 * z.P : 0) + (z.sharded ? 4 * z.S : 0);
  // Activations at the end of the forward.
  const int64_t per_layer = layer_activation_bytes(c, o);
  const int64_t activations = forward_activation_bytes(c, o);
  const int64_t rows = std::min(z.N, o.rows_per_chunk);
  const int64_t head = rows * z.V * (8 + (o.bf16 ? 2 : 0)) + 4 * z.N * z.h;
  // Unit-sized reduce-scatter buffers per reduction (one process: a plain copy).
  const int64_t copies = z.sharded ? (o.gloo && z.grouped ? 2 : 1) : 0;
  const int64_t unit_grads = 4 * z.P_layer * (1 + copies);
  // The LM head's weight gradient (lm_head's, or the tied embedding's) exists from the start of the backward until
  // the root unit is reduced, last; accumulated gradients already hold it.
  const int64_t head_grad = z.whole_grads && o.grad_accum > 1 ? 0 : 4 * z.V * z.h;
  // (The last layer's gradients appear as its activations are freed: only what exceeds them adds.)
  const int64_t last_grads = std::max<int64_t>(0, unit_grads - per_layer);
  const int64_t start = activations + head + grads_kept + head_grad + last_grads;
  const int64_t in_flight = std::min<int64_t>(z.L, 3);
  const int64_t piled_grads = grads_kept + head_grad + 4 * z.P_layer * in_flight * copies;
  // (cos and sin, made once per forward, stay until the first layer's backward.)
  const int64_t rope = rope_bytes(c, o);
  const int64_t piled_acts = rope + (o.activation_checkpointing
                                         ? z.L * 4 * z.N * z.h + per_layer
                                         : std::max<int64_t>(0, z.L - in_flight) * per_layer + 4 * z.N * z.h);
  const int64_t piled = z.sharded ? piled_grads + piled_acts : 0;
  // By the first layer's backward a sharded run holds the root unit's gradients and their reduce-scatter input(s).
  const int64_t grads_at_end = z.whole_grads ? 4 * z.P + (z.sharded ? 4 * z.S : 0)
                                             : grads_kept + std::max(unit_grads + head_grad, 4 * z.P_root * (1 + copies));
  const int64_t last_layer_acts = per_layer + rope + 4 * z.N * z.h;  // the first layer's, its input, the tables
  const int64_t last_layer = grads_at_end + last_layer_acts;
  // Across ranks, `none` keeps its all-reduce buckets (the size of the gradients) from the start.
  if (o.sharding == Sharding::None && z.grouped) add_item(plan, "buffers", "gradient all-reduce buckets", 4 * z.P);
  const int64_t peak = std::max({start, piled, last_layer});
  if (peak == start) {
    add_item(plan, "gradients", "kept through the forward (accumulated, or the shard)", grads_kept);
    add_item(plan, "gradients", "the LM head's weight", head_grad);
    add_item(plan, "gradients", "the last layer's, on their way to the reduction, beyond its freed activations",
             last_grads);
    add_item(plan, "activations", o.activation_checkpointing ? "each layer's input" : "every layer's saved tensors",
             activations);
    add_item(plan, "lm_head", fmt::format("{} rows of {} logits at a time, and the hidden states' gradient", rows, z.V),
             head);
  } else if (peak == piled) {
    add_item(plan, "gradients",
             fmt::format("the shard, the LM head's weight, and {} layers' reductions in flight", in_flight), piled_grads);
    add_item(plan, "activations", "not yet freed", piled_acts);
  } else {
    add_item(plan, "gradients", "by the backward of the model's first layer", grads_at_end);
    add_item(plan, "activations", "the first layer's, its input, and the rotary tables", last_layer_acts);
  }
}
}  // namespace

MemoryPlan plan_memory(const LlamaConfig& c, const MemoryPlanOptions& o) {
  if (o.world_size < 1 || o.seq_len < 1 || o.micro_batch < 1 || o.grad_accum < 1 || o.rows_per_chunk < 1)
    throw Error("plan_memory: world size, sequence length, micro-batch, accumulation and chunk rows must be >= 1");
  const PlanSizes sizes(c, o);
  MemoryPlan plan;
  plan.parameters = sizes.P;
  plan.micro_batch = o.micro_batch;
  add_resident(plan, sizes, o);
  add_backward_peak(plan, sizes, c, o);
  return plan;
}

std::string MemoryPlan::table(const MemoryPlanOptions& o) const {
  std::string out = "| category | what | bytes |\n| --- | --- | --- |\n";
  for (const auto& item : items) out += fmt::format("| {} | {} | {} |\n", item.category, item.detail, gib(item.bytes));
  out += fmt::format("| **total** | per device, at the step's peak | **{}** |\n", gib(total()));
  out += fmt::format("\n{} parameters; sharding {} over {} device(s): {} a {:g} GiB device\n", parameters,
                     enum_name(kShardingNames, o.sharding), o.world_size,
                     fits(o.device_gib) ? "fits" : "does NOT fit", o.device_gib);
  return out;
}

std::string MemoryPlan::json() const {
  nlohmann::ordered_json j;
  j["parameters"] = parameters;
  j["micro_batch"] = micro_batch;
  j["total"] = total();
  j["items"] = nlohmann::ordered_json::array();
  for (const auto& item : items) j["items"].push_back({{"category", item.category}, {"detail", item.detail}, {"bytes", item.bytes}});
  return j.dump(2);
}

}  // namespace rho
