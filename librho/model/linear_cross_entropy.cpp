#include "librho/model/linear_cross_entropy.h"

#include <ATen/autocast_mode.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/log_softmax.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/softmax.h>
#include <ATen/ops/where.h>
#include <ATen/ops/zeros.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

#include "librho/model/lean_ops.h"

namespace rho {
namespace {

// Softmax, log-sum-exp and the weight's gradient are kept in fp32 (fp64 for fp64 inputs).
at::ScalarType accumulate_dtype(at::ScalarType compute) { return at::promote_types(compute, at::kFloat); }


// One full-precision chunk's gradients {hidden, weight} by autograd through the unfused ops (linear,
// log_softmax, nll_loss), recomputed here: training then gives the numbers of the chunked loss this function
// replaces to the last bit, which keeps reproducibility tests (1 process against 2, resume) meaningful.
std::pair<at::Tensor, at::Tensor> chunk_grads_exact(const at::Tensor& hc, const at::Tensor& w, const at::Tensor& y,
                                                    const at::Tensor& g, int64_t ignore_index, bool need_h,
                                                    bool need_w) {
  at::AutoGradMode grad_on(true);
  const auto hl = hc.detach().requires_grad_(need_h), wl = w.detach().requires_grad_(need_w);
  const auto loss = at::cross_entropy_loss(at::linear(hl, wl), y, {}, at::Reduction::None, ignore_index);
  std::vector<at::Tensor> inputs;
  if (need_h) inputs.push_back(hl);
  if (need_w) inputs.push_back(wl);
  const auto grads = torch::autograd::grad({loss}, inputs, {g});
  return {need_h ? grads.front() : at::Tensor(), need_w ? grads.back() : at::Tensor()};
}

// (softmax(logits) - onehot(y)) * g for bf16/fp16 logits, without an fp32 copy of the chunk: the softmax is
// written straight in the logits' dtype (the GEMMs that consume it take that dtype anyway), and only the
// target's entry, where softmax - 1 cancels and low precision would lose the small gradient of a confident
// prediction, is made in fp32.
at::Tensor softmax_grad_lowp(const at::Tensor& logits, const at::Tensor& lse, const at::Tensor& g,
                             const at::Tensor& y) {
  auto d = at::softmax(logits, 1, logits.scalar_type()).mul_(g);
  const auto target = (logits.gather(1, y).to(g.scalar_type()) - lse).exp_().sub_(1).mul_(g);
  return d.scatter_(1, y, target.to(d.scalar_type()));
}

struct LinearCrossEntropy : torch::autograd::Function<LinearCrossEntropy> {
  // hidden and weight arrive uncast; both are cast to `compute_dtype` here so that the gradients go back to
  // the originals (the fp32 parameter, not an autocast copy) and the weight's gradient stays fp32.
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& hidden, const at::Tensor& weight,
                            const at::Tensor& targets, int64_t rows, int64_t ignore_index, int64_t compute_dtype) {
    // The dtypes below are chosen explicitly; autocast must not re-cast them.
    c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
    const auto dt = static_cast<at::ScalarType>(compute_dtype);
    const auto h = hidden.to(dt), w = weight.to(dt);
    const int64_t n = h.size(0);
    const auto acc = accumulate_dtype(dt);
    at::Tensor loss = at::empty({n}, h.options().dtype(acc)), lse = at::empty({n}, h.options().dtype(acc));
    for (int64_t r = 0; r < n; r += rows) {
      const int64_t m = std::min(rows, n - r);
      const auto logits = at::linear(h.narrow(0, r, m), w);
      const auto y = targets.narrow(0, r, m);
      const auto valid = y.ne(ignore_index);
      const auto yi = at::where(valid, y, 0).unsqueeze(1);
      // log_softmax is one kernel that reads low-precision logits as they are (logsumexp would need an fp32 copy
      // and two temporaries of the chunk); the row's log-sum-exp is the target's logit minus its log-softmax.
      const auto target_logsoftmax = at::log_softmax(logits, 1, acc).gather(1, yi).squeeze(1);
      lse.narrow(0, r, m).copy_(logits.gather(1, yi).squeeze(1).to(acc) - target_logsoftmax);
      loss.narrow(0, r, m).copy_(at::where(valid, -target_logsoftmax, 0.0));
    }
    ctx->save_for_backward({h, weight, targets, lse});
    ctx->saved_data["rows"] = rows;
    ctx->saved_data["ignore_index"] = ignore_index;
    ctx->saved_data["hidden_dtype"] = static_cast<int64_t>(hidden.scalar_type());
    return loss;
  }

  // d loss_i / d logits_i = softmax(logits_i) - onehot(y_i), scaled by grad_i; recomputed chunk by chunk, and
  // the weight's gradient summed over chunks in fp32.
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
    const auto saved = ctx->get_saved_variables();
    const auto &h = saved[0], &weight = saved[1], &targets = saved[2], &lse = saved[3];
    const int64_t rows = ctx->saved_data["rows"].toInt(), ignore_index = ctx->saved_data["ignore_index"].toInt();
    const auto hidden_dtype = static_cast<at::ScalarType>(ctx->saved_data["hidden_dtype"].toInt());
    const bool need_h = ctx->needs_input_grad(0), need_w = ctx->needs_input_grad(1);
    const auto w = weight.to(h.scalar_type());
    const auto acc = lse.scalar_type();
    const auto valid = targets.ne(ignore_index);
    const auto g = at::where(valid, grads[0].to(acc), 0.0);
    const auto safe_y = at::where(valid, targets, 0).unsqueeze(1);
    const int64_t n = h.size(0);
    at::Tensor grad_h = need_h ? at::empty_like(h) : at::Tensor();
    at::Tensor grad_w = need_w ? at::zeros(weight.sizes(), weight.options().dtype(acc)) : at::Tensor();
    for (int64_t r = 0; r < n; r += rows) {
      const int64_t m = std::min(rows, n - r);
      const auto hc = h.narrow(0, r, m);
      const auto gc = g.narrow(0, r, m).unsqueeze(1);
      const auto yc = safe_y.narrow(0, r, m);
      if (h.scalar_type() == acc) {
        const auto [gh, gw] =
            chunk_grads_exact(hc, w, targets.narrow(0, r, m), g.narrow(0, r, m), ignore_index, need_h, need_w);
        if (need_h) grad_h.narrow(0, r, m).copy_(gh);
        if (need_w) grad_w.add_(gw);
        continue;
      }
      const auto dc = softmax_grad_lowp(at::linear(hc, w), lse.narrow(0, r, m).unsqueeze(1), gc, yc);
      if (need_h) {
        auto out = grad_h.narrow(0, r, m);
        at::mm_out(out, dc, w);
      }
      // The weight's gradient is summed over chunks in fp32, each chunk's GEMM writing fp32 on CUDA.
      if (need_w) grad_w.add_(mm_as(dc.t(), hc, grad_w.scalar_type()));
    }
    return {need_h ? grad_h.to(hidden_dtype) : at::Tensor(), need_w ? grad_w.to(weight.scalar_type()) : at::Tensor(),
            at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor linear_cross_entropy(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& targets,
                                int64_t rows_per_chunk, int64_t ignore_index) {
  TORCH_CHECK(hidden.dim() == 2 && weight.dim() == 2 && hidden.size(1) == weight.size(1),
              "linear_cross_entropy: hidden [N, H] and weight [V, H] expected, got ", hidden.sizes(), " and ",
              weight.sizes());
  TORCH_CHECK(targets.dim() == 1 && targets.size(0) == hidden.size(0),
              "linear_cross_entropy: targets [N] expected, got ", targets.sizes());
  TORCH_CHECK(rows_per_chunk > 0, "linear_cross_entropy: rows_per_chunk must be positive");
  const auto dev = hidden.device().type();
  const auto dt = at::autocast::is_autocast_enabled(dev) ? at::autocast::get_autocast_dtype(dev)
                                                         : at::promote_types(hidden.scalar_type(), weight.scalar_type());
  return LinearCrossEntropy::apply(hidden, weight, targets.to(at::kLong), rows_per_chunk, ignore_index,
                                   static_cast<int64_t>(dt));
}

}  // namespace rho
