#include "librho/dist/grad_reducer.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/zeros_like.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>

#include "librho/dist/context.h"

namespace rho {

struct GradReadyHook : torch::autograd::PostAccumulateGradHook {
  GradReadyHook(GradBucketReducer* r, size_t i) : reducer(r), index(i) {}
  void operator()(const torch::autograd::Variable&) override { reducer->ready(index); }
  GradBucketReducer* reducer;
  size_t index;
};

GradBucketReducer::GradBucketReducer(std::vector<at::Tensor> params, DistContext& dist, double bucket_mb)
    : params_(std::move(params)), bucket_of_(params_.size()), dist_(dist) {
  const double limit = bucket_mb * 1024 * 1024;
  double bytes = 0;
  for (size_t k = params_.size(); k-- > 0;) {
    const auto& p = params_[k];
    const bool fits = !buckets_.empty() && bytes + p.nbytes() <= limit &&
                      params_[buckets_.back().params.front()].scalar_type() == p.scalar_type();
    if (!fits) {
      buckets_.emplace_back();
      bytes = 0;
    }
    buckets_.back().params.push_back(k);
    bytes += p.nbytes();
    bucket_of_[k] = buckets_.size() - 1;
  }
  if (!dist_.distributed()) return;  // one process: nothing to reduce, no buffers
  for (auto& b : buckets_) {
    int64_t n = 0;
    for (size_t k : b.params) n += params_[k].numel();
    b.flat = at::empty({n}, params_[b.params.front()].options());
  }
  for (size_t k = 0; k < params_.size(); ++k)
    torch::autograd::impl::set_post_acc_grad_hooks(params_[k], std::make_unique<GradReadyHook>(this, k));
}

GradBucketReducer::~GradBucketReducer() {
  if (dist_.distributed())
    for (auto& p : params_) torch::autograd::impl::set_post_acc_grad_hooks(p, nullptr);
}

int64_t GradBucketReducer::buffer_bytes() const {
  int64_t n = 0;
  for (const auto& b : buckets_)
    if (b.flat.defined()) n += static_cast<int64_t>(b.flat.nbytes());
  return n;
}

void GradBucketReducer::arm() {
  armed_ = true;
  next_launch_ = 0;
  for (auto& b : buckets_) b.waiting = b.params.size();
}

void GradBucketReducer::ready(size_t param) {
  if (!armed_) return;
  --buckets_[bucket_of_[param]].waiting;
  launch_ready_buckets();
}

void GradBucketReducer::launch_ready_buckets() {
  at::NoGradGuard no_grad;
  while (next_launch_ < buckets_.size() && buckets_[next_launch_].waiting == 0) {
    auto& b = buckets_[next_launch_++];
    int64_t off = 0;
    for (size_t k : b.params) {
      const auto& g = params_[k].grad();
      const int64_t n = params_[k].numel();
      b.flat.narrow(0, off, n).copy_(g.reshape({-1}));
      off += n;
    }
    dist_.allreduce_sum_async(b.flat);
  }
}

void GradBucketReducer::finish() {
  if (!dist_.distributed()) return;
  at::NoGradGuard no_grad;
  // A parameter that took no part in this backward still joins its bucket's collective, with a zero gradient.
  for (auto& b : buckets_)
    for (size_t k : b.params)
      if (!params_[k].grad().defined()) params_[k].mutable_grad() = at::zeros_like(params_[k]);
  for (auto& b : buckets_) b.waiting = 0;
  launch_ready_buckets();
  armed_ = false;
  dist_.wait_all();
  for (auto& b : buckets_) {
    int64_t off = 0;
    for (size_t k : b.params) {
      auto g = params_[k].mutable_grad();
      g.copy_(b.flat.narrow(0, off, params_[k].numel()).view(g.sizes()));
      off += params_[k].numel();
    }
  }
}

}  // namespace rho
