#pragma once
// ZeRO stage 1 over a DistContext: AdamW's state is sharded by parameter. Each parameter is stepped by one rank
// (contiguous runs in registration order, about equal numbers of elements per rank); after the step every rank
// receives the parameters the others updated, and for a checkpoint rank 0 gathers every rank's optimizer state,
// so checkpoints are the same as without sharding. Collectives are flattened buffers (at::flatten_dense_tensors).
#include <ATen/core/Tensor.h>

#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace rho {

class DistContext;

class Zero1 {
 public:
  using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;
  // named: the model's parameters in registration order.
  Zero1(NamedTensors named, const DistContext& dist);
  int64_t owner(const std::string& name) const { return owner_.at(name); }
  // After each rank stepped its own parameters: every rank gets every updated parameter (one broadcast per rank).
  void share_updated_params() const;
  // For a checkpoint. Rank 0 returns `mine` followed by every other rank's state, in rank order; `shaped_like(r)`
  // gives tensors (names and shapes) like rank r's state to receive into. Other ranks send `mine` and get {}.
  NamedTensors gather_to_root(NamedTensors mine, const std::function<NamedTensors(int64_t)>& shaped_like) const;

 private:
  NamedTensors named_;
  std::map<std::string, int64_t> owner_;
  const DistContext& dist_;
};

// A flat copy of `tensors` made on `root` is sent to every rank and copied back into their `tensors`.
void broadcast_tensors(const DistContext& dist, const std::vector<at::Tensor>& tensors, int64_t root);

}  // namespace rho
