#include "librho/dist/zero1.h"

#include <ATen/core/grad_mode.h>
#include <ATen/ops/flatten_dense_tensors.h>
#include <ATen/ops/unflatten_dense_tensors.h>

#include <algorithm>

#include "librho/dist/context.h"

namespace rho {

void broadcast_tensors(const DistContext& dist, const std::vector<at::Tensor>& tensors, int64_t root) {
  if (tensors.empty()) return;
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> plain;
  for (const auto& t : tensors) plain.push_back(t.detach());
  auto buf = at::flatten_dense_tensors(plain);
  dist.broadcast(buf, root);
  if (dist.rank() == root) return;
  const auto parts = at::unflatten_dense_tensors(buf, plain);
  for (size_t i = 0; i < plain.size(); ++i) plain[i].copy_(parts[i]);
}

Zero1::Zero1(NamedTensors named, const DistContext& dist) : named_(std::move(named)), dist_(dist) {
  int64_t total = 0, before = 0;
  for (const auto& [name, p] : named_) total += p.numel();
  const int64_t world = dist_.world_size();
  for (const auto& [name, p] : named_) {
    owner_[name] = std::min(world - 1, before * world / std::max<int64_t>(total, 1));
    before += p.numel();
  }
}

void Zero1::share_updated_params() const {
  for (int64_t r = 0; r < dist_.world_size(); ++r) {
    std::vector<at::Tensor> owned;
    for (const auto& [name, p] : named_)
      if (owner_.at(name) == r) owned.push_back(p);
    broadcast_tensors(dist_, owned, r);
  }
}

Zero1::NamedTensors Zero1::gather_to_root(NamedTensors mine,
                                          const std::function<NamedTensors(int64_t)>& shaped_like) const {
  for (int64_t r = 1; r < dist_.world_size(); ++r) {
    if (dist_.rank() != r && !dist_.is_main()) continue;
    auto shard = dist_.rank() == r ? mine : shaped_like(r);
    if (shard.empty()) continue;
    std::vector<at::Tensor> flat;
    for (const auto& [name, t] : shard) flat.push_back(t.to(at::kFloat));
    auto buf = at::flatten_dense_tensors(flat);
    if (dist_.rank() == r) {
      dist_.send(buf, 0);
      continue;
    }
    dist_.recv(buf, r);
    const auto parts = at::unflatten_dense_tensors(buf, flat);
    for (size_t i = 0; i < shard.size(); ++i) shard[i].second.copy_(parts[i]);
    mine.insert(mine.end(), shard.begin(), shard.end());
  }
  return dist_.is_main() ? mine : NamedTensors{};
}

}  // namespace rho
