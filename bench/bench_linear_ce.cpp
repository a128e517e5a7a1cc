// Peak memory and time of the LM head's per-token loss, forward + backward, three ways:
//   naive             full logits, then cross-entropy (what a Python training step does);
//   chunked_autograd  librho before linear_cross_entropy: logits made in row chunks, but autograd keeps every
//                     chunk's fp32 log-softmax, so the backward still holds the full fp32 logits;
//   fused             rho::linear_cross_entropy: only hidden, weight, targets and a log-sum-exp per row are kept.
// Each path runs in a fresh process (this binary with --mode) so peaks do not mix. The upstream gradient keeps
// a random 60% of the tokens (an SLM step). Before reporting, the paths' losses and gradients are compared
// through fixed random projections. Prints one JSON line.
//   bench_linear_ce [--tokens 16384] [--vocab 32000] [--hidden 128] [--rows 4096] [--device cpu|cuda]
//                   [--dtype fp32|bf16 (bf16 = CUDA autocast)] [--iters N]
#include <ATen/autocast_mode.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "bench/bench_common.h"
#include "librho/model/linear_cross_entropy.h"

namespace {

using rho::bench::Args;

// A deterministic scalar summary of t: its dot product with a fixed random tensor of the same shape.
double probe(const at::Tensor& t, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return (t.detach().to(at::kCPU, at::kDouble) * at::randn(t.sizes(), gen, at::kDouble)).sum().item<double>();
}

at::Tensor loss_of(const std::string& mode, const at::Tensor& h, const at::Tensor& w, const at::Tensor& y,
                   int64_t rows) {
  if (mode == "fused") return rho::linear_cross_entropy(h, w, y, rows);
  if (mode == "naive")
    return at::cross_entropy_loss(at::linear(h, w).to(at::kFloat), y, {}, at::Reduction::None, -100);
  std::vector<at::Tensor> parts;
  for (int64_t r = 0; r < h.size(0); r += rows) {
    const int64_t n = std::min(rows, h.size(0) - r);
    parts.push_back(at::cross_entropy_loss(at::linear(h.narrow(0, r, n), w).to(at::kFloat), y.narrow(0, r, n), {},
                                           at::Reduction::None, -100));
  }
  return at::cat(parts);
}

nlohmann::json run_mode(const Args& a, const std::string& mode) {
  const int64_t n = a.num("tokens", 16384), v = a.num("vocab", 32000), hd = a.num("hidden", 128);
  const int64_t rows = a.num("rows", 4096);
  const at::Device dev(a.str("device", "cpu"));
  const bool bf16 = a.str("dtype", "fp32") == "bf16";
  const int64_t iters = a.num("iters", dev.is_cuda() ? 10 : 1);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(1);
  const auto h = at::randn({n, hd}, gen).to(dev).requires_grad_(true);
  const auto w = (at::randn({v, hd}, gen) * 0.05).to(dev).requires_grad_(true);
  const auto y = at::randint(0, v, {n}, gen, at::kLong).to(dev);
  const auto keep = at::rand({n}, gen).lt(0.6).to(at::kFloat);
  const auto upstream = (keep / keep.sum()).to(dev);
  if (bf16) {
    at::autocast::set_autocast_enabled(at::kCUDA, true);
    at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
  }
  at::Tensor loss;
  auto step = [&] {
    h.mutable_grad() = at::Tensor();
    w.mutable_grad() = at::Tensor();
    loss = loss_of(mode, h, w, y, rows);
    (loss * upstream).sum().backward();
  };
  if (dev.is_cuda()) step();  // warm-up: kernels, allocator
  rho::bench::PeakMemory peak(dev);
  rho::bench::Timer timer;
  for (int64_t i = 0; i < iters; ++i) step();
  rho::bench::sync(dev);
  const double secs = timer.seconds() / iters;
  return {{"peak_bytes", peak.bytes()},
          {"seconds", secs},
          {"loss", probe(loss, 11)},
          {"grad_hidden", probe(h.grad(), 12)},
          {"grad_weight", probe(w.grad(), 13)}};
}

}  // namespace

constexpr const char* kUsage =
    "bench_linear_ce [--tokens 16384] [--vocab 32000] [--hidden 128] [--rows 4096] [--device cpu|cuda]\n"
    "                [--dtype fp32|bf16 (bf16 = autocast)] [--iters N]\n"
    "The LM head's per-token loss, forward + backward: full logits, chunked autograd, linear_cross_entropy.\n";

int main(int argc, char** argv) {
  const Args a(argc, argv, kUsage);
  if (a.has("mode")) {
    std::printf("%s\n", run_mode(a, a.str("mode", "")).dump().c_str());
    return 0;
  }
  const int64_t n = a.num("tokens", 16384), v = a.num("vocab", 32000);
  const bool bf16 = a.str("dtype", "fp32") == "bf16";
  nlohmann::json out = {{"bench", "linear_ce"}, {"device", a.str("device", "cpu")}, {"dtype", a.str("dtype", "fp32")}, {"threads", at::get_num_threads()},
                        {"tokens", n}, {"vocab", v}, {"hidden", a.num("hidden", 128)}, {"rows", a.num("rows", 4096)},
                        {"full_fp32_logits_bytes", 4.0 * n * v}};
  std::map<std::string, nlohmann::json> r;
  for (const char* mode : {"fused", "chunked_autograd", "naive"})
    r[mode] = nlohmann::json::parse(rho::bench::run_capture(std::string(argv[0]) + a.pass_on("mode") + " --mode " + mode));
  // Same results first: bf16 matmuls differ in rounding between a full and a chunked GEMM, fp32 barely.
  const double tol = bf16 ? 2e-2 : 1e-4;
  bool same = true;
  for (const char* key : {"loss", "grad_hidden", "grad_weight"})
    for (const char* mode : {"chunked_autograd", "naive"}) {
      const double x = r["fused"][key], ref = r[mode][key];
      same = same && std::abs(x - ref) <= tol * std::max(1.0, std::abs(ref));
    }
  out["results_match"] = same;
  if (!same) {  // no timings for paths that computed different things
    out["results"] = r;
    std::printf("%s\n", out.dump().c_str());
    return 1;
  }
  for (auto& [mode, j] : r) {
    out[mode + "_peak_bytes"] = j["peak_bytes"];
    out[mode + "_seconds"] = j["seconds"];
  }
  out["fused_over_naive_memory"] = r["fused"]["peak_bytes"].get<double>() / r["naive"]["peak_bytes"].get<double>();
  std::printf("%s\n", out.dump().c_str());
  return 0;
}
