#include "librho/eval/token_categories.h"

#include <ATen/ops/quantile.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/tensor.h>
#include <fmt/format.h>

#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>

#include "librho/train/checkpoint.h"
#include "librho/util/error.h"
#include "librho/util/progress.h"
#include "librho/util/device.h"

namespace rho {

std::string to_string(TokenCategory c) {
  static const char* names[] = {"H->H", "L->H", "H->L", "L->L"};
  return names[c];
}

TokenCategoryReport categorize_tokens(const at::Tensor& losses, const std::vector<double>& x, double threshold) {
  if (losses.dim() != 2 || losses.size(0) != static_cast<int64_t>(x.size()) || x.size() < 2)
    throw Error(fmt::format("token categories: need losses [checkpoints, tokens] for >= 2 checkpoints (got {} "
                            "dimensions for {} checkpoints)", losses.dim(), x.size()));
  const auto l = losses.to(at::kCPU, at::kDouble);
  const auto t = at::tensor(x, at::kDouble).unsqueeze(1);  // [C, 1]
  const auto dx = t - t.mean();
  const double sxx = (dx * dx).sum().item<double>();
  if (!(sxx > 0)) throw Error("token categories: the checkpoints must be at different training positions");
  // Least squares per token: slope = sum(dx * (l - mean)) / sum(dx^2); the line at the first and last x.
  const auto mean = l.mean(0);
  const auto slope = (dx * (l - mean)).sum(0) / sxx;
  const double x_mean = t.mean().item<double>();
  const auto start = mean + slope * (x.front() - x_mean), end = mean + slope * (x.back() - x_mean);

  TokenCategoryReport r;
  r.x = x;
  r.tokens = l.size(1);
  r.threshold = std::isnan(threshold) ? start.quantile(0.5).item<double>() : threshold;
  const auto start_high = start > r.threshold, end_high = end > r.threshold;
  const std::array<at::Tensor, 4> in = {start_high & end_high, ~start_high & end_high, start_high & ~end_high,
                                        ~start_high & ~end_high};
  for (int c = 0; c < 4; ++c) {
    r.counts[c] = in[c].sum().item<int64_t>();
    const auto per_checkpoint = (l * in[c]).sum(1) / std::max<int64_t>(r.counts[c], 1);
    for (int64_t i = 0; i < l.size(0); ++i) r.mean_loss[c].push_back(per_checkpoint[i].item<double>());
  }
  return r;
}

std::string TokenCategoryReport::to_json() const {
  nlohmann::ordered_json j;
  j["checkpoints"] = checkpoints;
  j["tokens_seen"] = x;
  j["tokens"] = tokens;
  j["threshold"] = threshold;
  for (int c = 0; c < 4; ++c) {
    const auto name = to_string(static_cast<TokenCategory>(c));
    j["categories"][name] = {{"count", counts[c]}, {"share", share(static_cast<TokenCategory>(c))},
                             {"mean_loss", mean_loss[c]}};
  }
  return j.dump(2) + "\n";
}

std::string TokenCategoryReport::table() const {
  std::string out = fmt::format("{} tokens, {} checkpoints, threshold {:.3f} nats\n", tokens, x.size(), threshold);
  out += fmt::format("{:<6} {:>8} {:>7} {:>11} {:>11}\n", "", "tokens", "share", "first loss", "last loss");
  for (int c = 0; c < 4; ++c)
    out += fmt::format("{:<6} {:>8} {:>6.1f}% {:>11.3f} {:>11.3f}\n", to_string(static_cast<TokenCategory>(c)),
                       counts[c], 100 * share(static_cast<TokenCategory>(c)), mean_loss[c].front(), mean_loss[c].back());
  return out;
}

TokenCategoryReport token_categories(const std::string& run_dir, const TokenDataset& data,
                                     const TokenCategoryOptions& options) {
  const auto checkpoints = list_checkpoints(run_dir);
  if (checkpoints.size() < 2)
    throw Error(fmt::format("{}: {} checkpoint(s); the analysis needs at least two (train.keep_checkpoints)", run_dir,
                            checkpoints.size()));
  const int64_t T = options.seq_len;
  const int64_t windows = std::min(options.windows, (data.num_tokens() - 1) / T);
  if (windows < 1) throw Error(fmt::format("{}: fewer than seq_len + 1 = {} tokens", data.dir(), T + 1));
  std::vector<at::Tensor> rows;
  for (int64_t w = 0; w < windows; ++w) rows.push_back(data.slice(w * T, T + 1));
  const auto tokens = at::stack(rows);
  const auto inputs = tokens.narrow(1, 0, T), targets = tokens.narrow(1, 1, T);
  const int64_t eos = data.manifest().eos_id;
  const auto keep = (eos >= 0 ? inputs != eos : at::ones_like(inputs, at::kBool)).reshape(-1);
  const bool cuda = resolve_device(options.device, "--device").is_cuda();
  const at::Device device = cuda ? at::Device(at::kCUDA) : at::Device(at::kCPU);

  std::vector<at::Tensor> losses;
  std::vector<double> x;
  Progress progress("token categories " + run_dir, static_cast<int64_t>(checkpoints.size()), "ckpt");
  for (const auto& dir : checkpoints) {
    const auto ck = load_checkpoint(dir);
    auto model = model_from_checkpoint(ck, dir);
    if (model->config.vocab_size < data.manifest().vocab_size)
      throw Error(fmt::format("{}: the model's vocab_size {} is below the dataset's {}", dir,
                              model->config.vocab_size, data.manifest().vocab_size));
    model->to(device);
    model->eval();
    at::NoGradGuard no_grad;
    losses.push_back(model->token_loss(inputs.to(device), targets.to(device)).to(at::kCPU, at::kFloat)
                         .reshape(-1).masked_select(keep));
    x.push_back(static_cast<double>(ck.state.tokens_seen));
    if (options.progress) progress.update(static_cast<int64_t>(losses.size()));
  }
  auto r = categorize_tokens(at::stack(losses), x, options.threshold);
  r.checkpoints = checkpoints;
  if (options.progress) progress.finish(fmt::format("{} tokens", r.tokens));
  return r;
}

}  // namespace rho
