// librho's side of bench_generate.py: greedy generation of a batch of token prompts through the KV cache
// (greedy_generate_batch, as rho_eval --bench runs it), every row generating exactly --new tokens (no EOS), timed
// after a one-batch warm-up. Writes the generated ids (int64, rows in order) to --out for the Python side to
// compare, and prints one JSON line.
//   bench_generate --model HF_DIR --prompts prompts.json --out ids.i64 [--new 64] [--batch 8] [--device cpu|cuda]
//                  [--dtype fp32|bf16]
#include <nlohmann/json.hpp>

#include "bench/bench_common.h"
#include "librho/eval/lm.h"
#include "librho/train/checkpoint.h"
#include "librho/util/files.h"

constexpr const char* kUsage =
    "bench_generate --model HF_DIR --prompts prompts.json --out ids.i64 [--new 64] [--batch 8] [--device cpu|cuda]\n"
    "               [--dtype fp32|bf16]\n"
    "librho's side of bench/bench_generate.py (run that).\n";

int main(int argc, char** argv) {
  const rho::bench::Args a(argc, argv, kUsage);
  const at::Device dev(a.str("device", "cpu"));
  const int64_t batch = a.num("batch", 8);
  rho::GenerateOptions o;
  o.max_new_tokens = a.num("new", 64);
  o.eos_id = -1;  // every row generates max_new_tokens, as transformers does with min_new_tokens
  const auto prompts = nlohmann::json::parse(rho::read_text_file(a.str("prompts", ""))).get<std::vector<std::vector<int64_t>>>();
  auto model = rho::load_model(a.str("model", ""));
  model->to(dev, a.str("dtype", "fp32") == "bf16" ? at::kBFloat16 : at::kFloat);
  model->eval();
  auto run = [&](size_t first, size_t count) {
    return rho::greedy_generate_batch(*model, {prompts.begin() + first, prompts.begin() + first + count}, o);
  };
  run(0, std::min<size_t>(batch, prompts.size()));  // warm-up
  rho::bench::sync(dev);
  const rho::bench::Timer timer;
  std::vector<int64_t> ids;
  int64_t generated = 0;
  for (size_t first = 0; first < prompts.size(); first += batch) {
    for (const auto& g : run(first, std::min<size_t>(batch, prompts.size() - first))) {
      ids.insert(ids.end(), g.ids.begin(), g.ids.end());
      generated += static_cast<int64_t>(g.ids.size());
    }
  }
  rho::bench::sync(dev);
  const double secs = timer.seconds();
  rho::write_file_atomic(a.str("out", ""), ids.data(), ids.size() * sizeof(int64_t));
  const nlohmann::json out = {{"prompts", prompts.size()}, {"generated_tokens", generated}, {"seconds", secs},
                              {"tokens_per_s", generated / secs}};
  std::printf("%s\n", out.dump().c_str());
  return 0;
}
