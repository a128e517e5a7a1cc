// librho's side of bench_generate.py: greedy generation of token prompts through the KV cache, --batch sequences
// at a time (greedy_generate_batch, as rho_eval --bench runs it), prompt i generating exactly new[i] tokens (no
// EOS), timed after a one-batch warm-up. --static generates in fixed batches instead (--batch prompts, the batch
// done when its longest is), for comparison with continuous batching; --cuda-graphs replays the decoding steps
// from CUDA graphs (BatchDecoding::cuda_graphs). Writes the generated ids (int64, prompts in
// order, concatenated) to --out for the Python side to compare, and prints one JSON line. --profile writes a
// Chrome trace of one more batch (its prefill and 8 decoding steps) for bench/profile_summary.py: kernels, host
// synchronisations, and how much of the time the GPU was busy.
//   bench_generate --model HF_DIR --prompts prompts.json --out ids.i64 [--batch 8] [--static] [--cuda-graphs]
//                  [--device cpu|cuda] [--dtype fp32|bf16] [--profile trace.json]
// prompts.json: {"prompts": [[ids...], ...], "new": [tokens to generate for each prompt]}
#include <nlohmann/json.hpp>

#include <algorithm>

#include "bench/bench_common.h"
#include "bench/bench_profile.h"
#include "librho/eval/lm.h"
#include "librho/train/checkpoint.h"
#include "librho/util/files.h"
#include "librho/util/host_memory.h"

constexpr const char* kUsage =
    "bench_generate --model HF_DIR --prompts prompts.json --out ids.i64 [--batch 8] [--static] [--cuda-graphs]\n"
    "               [--device cpu|cuda] [--dtype fp32|bf16] [--profile trace.json]\n"
    "librho's side of bench/bench_generate.py (run that).\n";

int main(int argc, char** argv) {
  const rho::bench::Args a(argc, argv, kUsage);
  const at::Device dev(a.str("device", "cpu"));
  if (dev.is_cpu()) rho::keep_host_heap();  // as the tools run (librho/util/host_memory.h)
  const int64_t batch = a.num("batch", 8);
  const bool fixed_batches = a.has("static");
  const auto spec = nlohmann::json::parse(rho::read_text_file(a.str("prompts", "")));
  const auto prompts = spec.at("prompts").get<std::vector<std::vector<int64_t>>>();
  const auto lengths = spec.at("new").get<std::vector<int64_t>>();
  if (prompts.empty() || lengths.size() != prompts.size() || *std::min_element(lengths.begin(), lengths.end()) < 1)
    throw std::runtime_error("prompts.json: \"new\" needs one length >= 1 for each of the prompts");
  rho::GenerateOptions o;
  o.max_new_tokens = *std::max_element(lengths.begin(), lengths.end());
  o.eos_id = -1;  // no EOS stop: prompt i ends after lengths[i] tokens (transformers: a stopping criterion)
  o.batching.cuda_graphs = a.has("cuda-graphs");
  rho::DecodeStats stats;
  auto model = rho::load_model(a.str("model", ""));
  model->to(dev, a.str("dtype", "fp32") == "bf16" ? at::kBFloat16 : at::kFloat);
  model->eval();
  // prompts [first, first + count): all in one batch (static), or batch rows at a time, a finished row taking
  // the next prompt (continuous)
  auto run = [&](size_t first, size_t count) {
    o.batching.batch_size = fixed_batches ? 0 : batch;
    return rho::greedy_generate_batch(*model, {prompts.begin() + first, prompts.begin() + first + count}, o,
                                      [&](size_t p, const std::vector<int64_t>& ids) {
                                        return static_cast<int64_t>(ids.size()) >= lengths[first + p];
                                      });
  };
  run(0, std::min<size_t>(batch, prompts.size()));  // warm-up
  rho::bench::sync(dev);
  o.stats = &stats;  // the timed run's
  const rho::bench::Timer timer;
  std::vector<int64_t> ids;
  int64_t generated = 0;
  const size_t step = fixed_batches ? static_cast<size_t>(batch) : prompts.size();
  for (size_t first = 0; first < prompts.size(); first += step) {
    for (const auto& g : run(first, std::min(step, prompts.size() - first))) {
      ids.insert(ids.end(), g.ids.begin(), g.ids.end());
      generated += static_cast<int64_t>(g.ids.size());
    }
  }
  rho::bench::sync(dev);
  const double secs = timer.seconds();
  rho::write_file_atomic(a.str("out", ""), ids.data(), ids.size() * sizeof(int64_t));
  if (a.has("profile")) {
    auto p = o;
    p.stats = nullptr;
    p.batching.batch_size = batch;
    p.max_new_tokens = 8;
    const std::vector<std::vector<int64_t>> rows(prompts.begin(),
                                                 prompts.begin() + std::min<size_t>(batch, prompts.size()));
    rho::bench::profile_to(a.str("profile", ""), dev, [&] { rho::greedy_generate_batch(*model, rows, p, {}); });
  }
  const nlohmann::json out = {{"prompts", prompts.size()}, {"generated_tokens", generated}, {"seconds", secs},
                              {"tokens_per_s", generated / secs}, {"decode_steps", stats.steps},
                              {"graph_replays", stats.graph_replays}, {"graphs_recorded", stats.graph_captures},
                              {"prefill_seconds", stats.prefill_seconds}, {"step_seconds", stats.step_seconds},
                              {"prefill_padding", stats.prefill_padding}};
  std::printf("%s\n", out.dump().c_str());
  return 0;
}
