// librho's side of bench_train.py: rho_pretrain's Trainer (the real optimizer step: loader, forward, SLM
// selection, backward, clip, fused AdamW) from a training YAML, timed over --steps steps after --warmup steps.
// Peak memory counts from before the Trainer exists (weights, gradients, AdamW state, activations). Prints the
// first step's losses (computed at the initial weights, for the Python side to compare) and one JSON line.
// --profile PATH: after the timed steps, one more step under the Kineto profiler, saved as a Chrome trace.
// One process, whatever a launcher's variables say; RHO_PROCESS_GROUP=always makes it a process group of one.
//   bench_train --config run.yaml [--warmup 2] [--steps 5] [--profile trace.json]
#include <nlohmann/json.hpp>

#include "bench/bench_profile.h"
#include "librho/dist/context.h"
#include "librho/util/enum_names.h"
#include "librho/train/trainer.h"
#include "librho/util/host_memory.h"

constexpr const char* kUsage =
    "bench_train --config run.yaml [--warmup 2] [--steps 5] [--profile trace.json]\n"
    "librho's side of bench/bench_train.py (run that).\n";

int main(int argc, char** argv) {
  const rho::bench::Args a(argc, argv, kUsage);
  const auto cfg = rho::TrainConfig::from_yaml_file(a.str("config", ""));
  const int64_t warmup = a.num("warmup", 2), steps = a.num("steps", 5);
  const at::Device dev = rho::resolve_device(cfg.device, "run.device");
  if (dev.is_cpu()) rho::keep_host_heap();  // as the tools run (librho/util/host_memory.h)
  const rho::bench::PeakMemory peak(dev);
  const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(cfg.dist_timeout * 1000));
  // One process always (a launcher's variables are not for a benchmark); a group of one when asked.
  auto env = rho::DistEnv::from_env();
  env.rank = env.local_rank = 0;
  env.world_size = 1;
  const auto group = rho::DistContext::connect(env, dev.is_cuda(), timeout);
  rho::Trainer trainer(cfg, /*resume=*/false, group);
  nlohmann::json out = {{"stage", rho::to_string(cfg.stage)}, {"parameters", trainer.model()->num_parameters()},
                        {"backend", rho::enum_name(rho::kBackendNames, group->backend())}};
  for (int64_t i = 0; i < warmup; ++i) {
    const auto m = trainer.train_step();
    if (i == 0) out.update({{"first_loss", m.loss}, {"first_loss_all", m.loss_all}});
  }
  rho::bench::sync(dev);
  const rho::bench::Timer timer;
  int64_t tokens = 0;
  double selected = 0;
  for (int64_t i = 0; i < steps; ++i) {
    const auto m = trainer.train_step();
    tokens += m.tokens;
    selected += m.selected_fraction / steps;
  }
  rho::bench::sync(dev);
  const double secs = timer.seconds();
  out.update({{"steps", steps},
              {"step_seconds", secs / steps},
              {"tokens_per_step", tokens / steps},
              {"tokens_per_s", tokens / secs},
              {"selected_fraction", selected},
              {"peak_bytes", peak.bytes()}});
  if (a.has("profile")) rho::bench::profile_to(a.str("profile", ""), dev, [&] { trainer.train_step(); });
  group->shutdown();
  std::printf("%s\n", out.dump().c_str());
  return 0;
}
