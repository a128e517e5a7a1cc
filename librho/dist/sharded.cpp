#include "librho/dist/sharded.h"

#include <ATen/ops/_foreach_mul.h>
#include <ATen/ops/_foreach_norm.h>
#include <ATen/ops/_fused_adamw.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/zeros.h>
#include <ATen/core/grad_mode.h>
#include <c10/core/StorageImpl.h>
#include <fmt/format.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <chrono>
#include <cmath>
#include <map>
#include <optional>

#include "librho/util/error.h"

namespace rho {

std::pair<int64_t, int64_t> ShardedUnitLayout::owned(int64_t rank, int64_t world) const {
  const int64_t s = shard_numel(world);
  const int64_t begin = std::min(numel, rank * s), end = std::min(numel, (rank + 1) * s);
  return {begin, end};
}

struct ShardedModel::Unit {
  std::vector<at::Tensor> params;  // the model's parameters: views into `full`
  int64_t padded = 0, shard = 0;
  bool sharded_weights = false;  // parameters level, a layer: `full` is freed between uses
  at::Tensor full;        // the gathered buffer [padded]: fp32, or the compute dtype when sharded_weights
  at::Tensor master;      // fp32 [shard]: this rank's weights (a view of `full` unless sharded_weights)
  at::Tensor grad;        // fp32 [shard]: this rank's gradient
  at::Tensor exp_avg, exp_avg_sq;  // fp32 [shard]
  // AdamW's tensor lists: the parts of each parameter inside this rank's shard, as views, by group (0: decayed).
  std::vector<at::Tensor> seg_param[2], seg_grad[2], seg_m[2], seg_v[2];
  bool gathered = true;
  DistContext::Handle gather, reduce;
  at::Tensor gather_buf, gather_src, reduce_in, reduce_out;
  size_t waiting = 0;  // parameters whose gradient this backward has not produced yet
};

struct ShardedGradHook : torch::autograd::PostAccumulateGradHook {
  ShardedGradHook(ShardedModel* m, size_t u) : model(m), unit(u) {}
  void operator()(const torch::autograd::Variable&) override { model->param_ready(unit); }
  ShardedModel* model;
  size_t unit;
};

namespace {
// The unit a parameter belongs to: "layers.<i>." -> i + 1, everything else (embedding, final norm, lm_head) -> 0.
size_t unit_index_of(const std::string& name) {
  if (name.rfind("layers.", 0) != 0) return 0;
  return std::stoul(name.substr(7, name.find('.', 7) - 7)) + 1;
}

bool decayed(const std::string& name, const at::Tensor& p, bool decay_norms_and_embeddings) {
  return decay_norms_and_embeddings || (p.dim() >= 2 && name.find("embed_tokens") == std::string::npos);
}

// Frees a tensor's memory but keeps its storage object, so every view of it (the parameters, and whatever autograd
// saved of them) sees the memory given back by adopt_storage.
void free_storage(const at::Tensor& t) {
  auto* s = t.storage().unsafeGetStorageImpl();
  s->set_data_ptr_noswap(at::DataPtr(nullptr, t.device()));
  s->set_nbytes(0);
}
// Moves `from`'s memory into `to`'s storage (no copy, no version bump: autograd's saved views stay valid).
void adopt_storage(const at::Tensor& to, const at::Tensor& from) {
  auto* src = from.storage().unsafeGetStorageImpl();
  auto* dst = to.storage().unsafeGetStorageImpl();
  const size_t n = src->nbytes();
  dst->set_data_ptr_noswap(src->set_data_ptr(at::DataPtr(nullptr, from.device())));
  dst->set_nbytes(n);
  src->set_nbytes(0);
}
}  // namespace

ShardedModel::ShardedModel(Llama model, DistContext& dist, Sharding level, at::ScalarType compute_dtype,
                           ShardedAdamWOptions adam)
    : model_(std::move(model)), dist_(dist), level_(level), compute_dtype_(compute_dtype), adam_(adam) {
  TORCH_CHECK(level_ != Sharding::None, "ShardedModel: sharding none needs no ShardedModel");
  at::NoGradGuard no_grad;
  group_parameters();
  for (size_t u = 0; u < units_.size(); ++u) {
    flatten_unit(u);
    make_adamw_views(u);
    for (const auto& p : units_[u]->params)
      torch::autograd::impl::set_post_acc_grad_hooks(p, std::make_unique<ShardedGradHook>(this, u));
    if (units_[u]->sharded_weights) release(u);
  }
  for (size_t u = units_.size(); u-- > 1;) reduce_order_.push_back(u);
  reduce_order_.push_back(0);
  step_count_ = at::zeros({}, at::TensorOptions().dtype(at::kFloat).device(units_[0]->params[0].device()));
  if (level_ == Sharding::Parameters) model_->layer_hooks = this;
}

// The units (root, then one per layer) and, in the model's order, each one's parameters and their places in it.
void ShardedModel::group_parameters() {
  const size_t n_units = model_->layers->size() + 1;
  layout_.resize(n_units);
  units_.resize(n_units);
  layout_[0].name = "root";
  for (size_t u = 1; u < n_units; ++u) layout_[u].name = fmt::format("layers.{}", u - 1);
  for (auto& item : model_->named_parameters()) {
    const size_t u = unit_index_of(item.key());
    auto& L = layout_[u];
    L.params.push_back({item.key(), item.value().sizes().vec(), L.numel, item.value().numel()});
    L.numel += item.value().numel();
    if (!units_[u]) units_[u] = std::make_unique<Unit>();
    units_[u]->params.push_back(item.value());
  }
}

// A unit's parameters copied into one flat fp32 buffer (padded to a multiple of the world size), `full`: that buffer,
// or its copy in the compute dtype when the weights are sharded; the parameters become views of `full`. This rank's
// fp32 master shard (its own copy when the weights are sharded, a view of `full` otherwise); its gradient and AdamW
// moments, zero.
void ShardedModel::flatten_unit(size_t u) {
  auto& U = *units_[u];
  const auto& L = layout_[u];
  const int64_t W = dist_.world_size(), r = dist_.rank();
  const auto f32 = at::TensorOptions().dtype(at::kFloat).device(U.params[0].device());
  U.shard = L.shard_numel(W);
  U.padded = U.shard * W;
  U.sharded_weights = level_ == Sharding::Parameters && u > 0;
  auto flat = at::zeros({U.padded}, f32);
  for (size_t i = 0; i < U.params.size(); ++i)
    flat.narrow(0, L.params[i].offset, L.params[i].numel).copy_(U.params[i].detach().reshape(-1));
  if (U.sharded_weights) {
    U.master = flat.narrow(0, r * U.shard, U.shard).clone();
    U.full = flat.to(compute_dtype_);
  } else {
    U.full = flat;
    U.master = flat.narrow(0, r * U.shard, U.shard);
  }
  for (size_t i = 0; i < U.params.size(); ++i)
    U.params[i].set_data(U.full.narrow(0, L.params[i].offset, L.params[i].numel).view(L.params[i].shape));
  U.grad = at::zeros({U.shard}, f32);
  U.exp_avg = at::zeros({U.shard}, f32);
  U.exp_avg_sq = at::zeros({U.shard}, f32);
}

// AdamW's views: each parameter's part of [r * shard, (r + 1) * shard), in its weight-decay group.
void ShardedModel::make_adamw_views(size_t u) {
  auto& U = *units_[u];
  const auto& L = layout_[u];
  const int64_t r = dist_.rank();
  for (size_t i = 0; i < U.params.size(); ++i) {
    const auto& P = L.params[i];
    const int64_t lo = std::max(P.offset, r * U.shard), hi = std::min(P.offset + P.numel, (r + 1) * U.shard);
    if (hi <= lo) continue;
    const int g = decayed(P.name, U.params[i], adam_.decay_norms_and_embeddings) ? 0 : 1;
    const int64_t at = lo - r * U.shard, len = hi - lo;
    U.seg_param[g].push_back(U.master.narrow(0, at, len));
    U.seg_grad[g].push_back(U.grad.narrow(0, at, len));
    U.seg_m[g].push_back(U.exp_avg.narrow(0, at, len));
    U.seg_v[g].push_back(U.exp_avg_sq.narrow(0, at, len));
  }
}

ShardedModel::~ShardedModel() {
  if (model_->layer_hooks == this) model_->layer_hooks = nullptr;
  for (auto& U : units_)
    for (auto& p : U->params) torch::autograd::impl::set_post_acc_grad_hooks(p, nullptr);
}

void ShardedModel::start_gather(size_t u) {
  auto& U = *units_[u];
  if (U.gathered || U.gather) return;
  U.gather_buf = at::empty({U.padded}, U.full.options());
  U.gather_src = U.master.to(compute_dtype_);
  U.gather = dist_.all_gather_async(U.gather_buf, U.gather_src, "parameter all-gather");
  ++gather_stats_.issued;
}

void ShardedModel::ensure_gathered(size_t u) {
  auto& U = *units_[u];
  if (U.gathered) return;
  if (U.gather) ++gather_stats_.prefetched;
  start_gather(u);
  const auto t0 = std::chrono::steady_clock::now();
  dist_.wait(U.gather);
  gather_stats_.wait_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  U.gather.reset();
  adopt_storage(U.full, U.gather_buf);
  U.gather_buf = U.gather_src = at::Tensor();
  U.gathered = true;
}

void ShardedModel::release(size_t u) {
  auto& U = *units_[u];
  if (!U.sharded_weights) return;
  if (U.gather) {  // a prefetch nobody used
    dist_.wait(U.gather);
    U.gather.reset();
    U.gather_buf = U.gather_src = at::Tensor();
  }
  if (!U.gathered) return;
  free_storage(U.full);
  U.gathered = false;
}

void ShardedModel::before_layer(size_t layer) {
  const size_t u = layer + 1;
  ensure_gathered(u);
  if (u + 1 < units_.size()) start_gather(u + 1);  // the next layer's weights travel while this one computes
}

at::Tensor ShardedModel::after_layer(size_t layer, const at::Tensor& output) {
  const size_t u = layer + 1;
  const bool backward_follows = at::GradMode::is_enabled() && output.requires_grad();
  if (backward_follows)
    // Runs when backward reaches this layer, before any of its backward: its weights are needed again.
    output.register_hook([this, u](const at::Tensor&) {
      ensure_gathered(u);
      if (u > 1) start_gather(u - 1);
    });
  // The last layer is the first one backward needs: it stays gathered until its gradients are reduced (or the
  // weights change), which saves a gather and the backward's first wait.
  if (!(backward_follows && u + 1 == units_.size())) release(u);
  return output;
}

void ShardedModel::before_backward(bool last) {
  armed_ = level_ != Sharding::Optimizer || last;
  if (!armed_) return;
  next_reduce_ = next_finish_ = 0;
  for (auto& U : units_) U->waiting = U->params.size();
}

void ShardedModel::param_ready(size_t u) {
  if (!armed_) return;
  --units_[u]->waiting;
  launch_ready_units();
}

// Reduce-scatters of units whose gradients are complete, strictly in reduce_order_ so that every rank issues the
// same collectives in the same order.
void ShardedModel::launch_ready_units() {
  at::NoGradGuard no_grad;
  while (next_reduce_ < reduce_order_.size() && units_[reduce_order_[next_reduce_]]->waiting == 0) {
    const size_t u = reduce_order_[next_reduce_++];
    auto& U = *units_[u];
    const auto& L = layout_[u];
    U.reduce_in = at::zeros({U.padded}, U.grad.options());
    for (size_t i = 0; i < U.params.size(); ++i) {
      auto& g = U.params[i].mutable_grad();
      if (!g.defined()) continue;  // no gradient in this backward: zeros
      U.reduce_in.narrow(0, L.params[i].offset, L.params[i].numel).copy_(g.reshape(-1));
      g = at::Tensor();
    }
    U.reduce_out = level_ == Sharding::Optimizer ? U.grad : at::empty({U.shard}, U.grad.options());
    U.reduce = dist_.reduce_scatter_sum_async(U.reduce_out, U.reduce_in, "gradient reduce-scatter");
    release(u);  // backward is done with this layer's weights
    // At most kReducesInFlight units' gradient buffers exist at once: the oldest is finished first.
    if (next_reduce_ > next_finish_ + kReducesInFlight) finish_reduce(reduce_order_[next_finish_++]);
  }
}

void ShardedModel::finish_reduce(size_t u) {
  auto& U = *units_[u];
  dist_.wait(U.reduce);
  U.reduce.reset();
  if (level_ != Sharding::Optimizer) U.grad.add_(U.reduce_out);
  U.reduce_in = U.reduce_out = at::Tensor();
}

void ShardedModel::after_backward() {
  if (!armed_) return;
  for (auto& U : units_) U->waiting = 0;
  launch_ready_units();
  at::NoGradGuard no_grad;
  while (next_finish_ < reduce_order_.size()) finish_reduce(reduce_order_[next_finish_++]);
  armed_ = false;
}

at::Tensor ShardedModel::clip_grad_norm(double max_norm) {
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> grads;
  for (auto& U : units_) grads.push_back(U->grad);
  auto sq = at::stack(at::_foreach_norm(grads, 2)).to(at::kDouble).pow(2).sum().reshape({1});
  dist_.allreduce_sum(sq);
  const auto total = sq.sqrt().to(at::kFloat).reshape({});
  if (std::isfinite(max_norm)) at::_foreach_mul_(grads, (max_norm / (total + 1e-6)).clamp_max(1.0));
  return total;
}

void ShardedModel::step(double lr, const at::Tensor& found_inf) {
  at::NoGradGuard no_grad;
  step_count_.add_(1);
  const auto inf = found_inf.defined() ? std::optional<at::Tensor>(found_inf) : std::nullopt;
  for (int g = 0; g < 2; ++g) {
    std::vector<at::Tensor> params, grads, m, v, steps;
    for (auto& U : units_) {
      params.insert(params.end(), U->seg_param[g].begin(), U->seg_param[g].end());
      grads.insert(grads.end(), U->seg_grad[g].begin(), U->seg_grad[g].end());
      m.insert(m.end(), U->seg_m[g].begin(), U->seg_m[g].end());
      v.insert(v.end(), U->seg_v[g].begin(), U->seg_v[g].end());
    }
    if (params.empty()) continue;
    steps.assign(params.size(), step_count_);  // read, never written, by the kernel
    at::_fused_adamw_(params, grads, m, v, {}, steps, lr, adam_.beta1, adam_.beta2, g == 0 ? adam_.weight_decay : 0.0,
                      adam_.eps, /*amsgrad=*/false, /*maximize=*/false, /*grad_scale=*/std::nullopt, inf);
  }
  if (inf) step_count_.sub_(*inf);  // a skipped step does not count
  for (auto& U : units_) U->grad.zero_();
  share_weights();
}

// After the weights changed: replicated buffers are all-gathered from the shards (every unit in flight at once);
// sharded layers are dropped and gathered again when next used.
void ShardedModel::share_weights() {
  at::NoGradGuard no_grad;
  for (auto& U : units_) {
    if (U->sharded_weights) {
      release(&U - &units_[0]);
      continue;
    }
    U->gather_src = U->master.clone();
    U->gather = dist_.all_gather_async(U->full, U->gather_src, "parameter all-gather");
  }
  for (auto& U : units_) {
    if (U->sharded_weights) continue;
    dist_.wait(U->gather);
    U->gather.reset();
    U->gather_src = at::Tensor();
  }
}

std::vector<std::pair<std::string, at::Tensor>> ShardedModel::shard_state() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  const int64_t W = dist_.world_size(), r = dist_.rank();
  for (size_t u = 0; u < units_.size(); ++u) {
    const auto [b, e] = layout_[u].owned(r, W);
    const int64_t len = e - b;
    const auto& U = *units_[u];
    out.emplace_back(layout_[u].name + ".param", U.master.narrow(0, 0, len));
    out.emplace_back(layout_[u].name + ".exp_avg", U.exp_avg.narrow(0, 0, len));
    out.emplace_back(layout_[u].name + ".exp_avg_sq", U.exp_avg_sq.narrow(0, 0, len));
  }
  out.emplace_back("step", step_count_);
  return out;
}

void ShardedModel::load_shard_state(
    int64_t world, const std::function<std::vector<std::pair<std::string, at::Tensor>>(int64_t)>& read,
    const std::string& source) {
  at::NoGradGuard no_grad;
  const int64_t W = dist_.world_size(), r = dist_.rank();
  for (int64_t q = 0; q < world; ++q) {
    const auto tensors = read(q);
    std::map<std::string, at::Tensor> by_name(tensors.begin(), tensors.end());
    auto take = [&](const std::string& name, int64_t numel) {
      const auto it = by_name.find(name);
      if (it == by_name.end()) throw Error(fmt::format("{}: rank {}'s shard lacks '{}'", source, q, name));
      if (it->second.numel() != numel)
        throw Error(fmt::format("{}: rank {}'s '{}' holds {} values where {} ranks give it {}", source, q, name,
                                it->second.numel(), world, numel));
      return it->second.reshape(-1);
    };
    if (q == 0) step_count_.copy_(take("step", 1).reshape({}));
    for (size_t u = 0; u < units_.size(); ++u) {
      const auto& L = layout_[u];
      auto& U = *units_[u];
      const auto [ob, oe] = L.owned(q, world);
      const auto [nb, ne] = L.owned(r, W);
      const int64_t lo = std::max(ob, nb), hi = std::min(oe, ne);
      const auto param = take(L.name + ".param", oe - ob), m = take(L.name + ".exp_avg", oe - ob),
                 v = take(L.name + ".exp_avg_sq", oe - ob);
      if (hi <= lo) continue;
      U.master.narrow(0, lo - nb, hi - lo).copy_(param.narrow(0, lo - ob, hi - lo));
      U.exp_avg.narrow(0, lo - nb, hi - lo).copy_(m.narrow(0, lo - ob, hi - lo));
      U.exp_avg_sq.narrow(0, lo - nb, hi - lo).copy_(v.narrow(0, lo - ob, hi - lo));
    }
  }
  share_weights();
}

std::vector<std::pair<std::string, at::Tensor>> ShardedModel::gather_unit(size_t u) {
  at::NoGradGuard no_grad;
  auto& U = *units_[u];
  at::Tensor full = U.full;
  if (U.sharded_weights) {
    full = at::empty({U.padded}, U.master.options());
    dist_.wait(dist_.all_gather_async(full, U.master.contiguous(), "parameter all-gather"));
  }
  std::vector<std::pair<std::string, at::Tensor>> out;
  if (!dist_.is_main()) return out;
  for (const auto& P : layout_[u].params)
    out.emplace_back(P.name, full.narrow(0, P.offset, P.numel).view(P.shape).to(at::kCPU, at::kFloat, false, true));
  return out;
}

ShardedMemory ShardedModel::memory() const {
  ShardedMemory m;
  auto bytes = [](const at::Tensor& t) {
    return t.defined() ? static_cast<int64_t>(t.storage().unsafeGetStorageImpl()->nbytes()) : int64_t(0);
  };
  for (const auto& U : units_) {
    m.weights += bytes(U->full) + (U->sharded_weights ? bytes(U->master) : 0) + bytes(U->gather_buf);
    m.gradients += bytes(U->grad) + bytes(U->reduce_in) + (U->reduce_out.is_same(U->grad) ? 0 : bytes(U->reduce_out));
    for (const auto& p : U->params) m.gradients += bytes(p.grad());
    m.optimizer += bytes(U->exp_avg) + bytes(U->exp_avg_sq);
  }
  m.optimizer += bytes(step_count_);
  return m;
}

}  // namespace rho
