#pragma once
// train.sharding: how much of the training state data parallelism splits over the ranks (librho/dist/sharded.h).
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace rho {

// none: every rank holds everything (gradients all-reduced); optimizer (ZeRO-1): AdamW's state; gradients
// (ZeRO-2): + the gradients; parameters (ZeRO-3 / FSDP): + the weights.
enum class Sharding { None, Optimizer, Gradients, Parameters };
inline constexpr std::pair<Sharding, const char*> kShardingNames[] = {{Sharding::None, "none"},
                                                                       {Sharding::Optimizer, "optimizer"},
                                                                       {Sharding::Gradients, "gradients"},
                                                                       {Sharding::Parameters, "parameters"}};

// Where a unit's parameters sit in its flat buffer.
struct ShardedParam {
  std::string name;
  std::vector<int64_t> shape;
  int64_t offset = 0, numel = 0;
};
struct ShardedUnitLayout {
  std::string name;  // "root" or "layers.<i>"
  int64_t numel = 0;  // unpadded
  std::vector<ShardedParam> params;
  // This unit's shard size with `world` ranks, and the part [begin, end) of the unpadded buffer rank r owns
  // (empty where the shard is padding).
  int64_t shard_numel(int64_t world) const { return (numel + world - 1) / world; }
  std::pair<int64_t, int64_t> owned(int64_t rank, int64_t world) const;
};

}  // namespace rho
