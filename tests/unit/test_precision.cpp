// The GPU paths' twins on the CPU: bf16 autocast training (with and without activation checkpointing, every
// selection scope), scoring with training's precision recipe, and the host reads a training step makes (each one
// a synchronisation on a GPU).
#include <ATen/ATen.h>
#include <ATen/record_function.h>

#include <catch2/catch.hpp>
#include <c10/util/Backtrace.h>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "helpers.h"
#include "librho/data/token_dataset.h"
#include "librho/model/autocast.h"
#include "librho/score/token_scorer.h"
#include "librho/train/config.h"
#include "librho/train/trainer.h"

namespace fs = std::filesystem;

namespace {

constexpr int64_t kVocab = 64;

rho::TrainConfig run_config(const rho::test::TempDir& dir, const std::string& name,
                            const std::vector<std::string>& overrides = {}) {
  if (!fs::exists(dir.str("data/manifest.json")))
    rho::test::write_token_dataset(dir.str("data"), rho::test::pattern_documents(120, kVocab, 1), 1500, kVocab, 0);
  const std::string yaml = R"(
run: {out_dir: )" + dir.str(name) + R"(, seed: 3, device: cpu}
model: {vocab_size: 64, hidden_size: 32, intermediate_size: 64, num_layers: 2, num_heads: 4, num_kv_heads: 2,
        max_position_embeddings: 64}
data: {train: )" + dir.str("data") + R"(, seq_len: 32, batch_size: 4}
optim: {lr: 0.01, min_lr: 0.001, warmup_steps: 2, max_steps: 100}
train: {log_every: 1000, checkpoint_every: 1000, export_hf: false}
)";
  return rho::TrainConfig::from_yaml_string(yaml, name + ".yaml", overrides);
}

std::vector<std::string> slm_overrides(const std::string& scope, const std::string& rule = "current") {
  return {"train.stage=slm", "slm.rule=" + rule, "slm.ratio=0.6", "slm.scope=" + scope};
}

// Counts, on this thread, the operator calls a predicate picks (RecordFunction, as the profiler sees them). The
// predicate also gets the nesting depth: 0 for an operator called by librho itself, more for one called inside
// another operator (or an autograd node).
class OpCounter {
 public:
  using Pick = bool (*)(const at::RecordFunction&, int depth);
  explicit OpCounter(Pick pick) {
    pick_ = pick;
    count_ = depth_ = 0;
    handle_ = at::addThreadLocalCallback(
        at::RecordFunctionCallback(
            [](const at::RecordFunction& fn) -> std::unique_ptr<at::ObserverContext> {
              if (pick_(fn, depth_)) {
                ++count_;
                // RHO_TEST_TRACE=1 names each counted call and where it came from.
                if (std::getenv("RHO_TEST_TRACE"))
                  std::fprintf(stderr, "%s\n%s\n", fn.name(), c10::get_backtrace(1, 14).c_str());
              }
              ++depth_;
              return nullptr;
            },
            [](const at::RecordFunction&, at::ObserverContext*) { --depth_; })
            .needsInputs(true));
  }
  ~OpCounter() { at::removeCallback(handle_); }
  int64_t take() {
    const auto n = count_;
    count_ = 0;
    return n;
  }

 private:
  static thread_local Pick pick_;
  static thread_local int64_t count_;
  static thread_local int depth_;
  at::CallbackHandle handle_;
};
thread_local OpCounter::Pick OpCounter::pick_ = nullptr;
thread_local int64_t OpCounter::count_ = 0;
thread_local int OpCounter::depth_ = 0;

// A read of a tensor's value that librho asks for (called directly, not inside another operator, whose CPU kernel
// may read its own scalars where the CUDA kernel does not): .item() (aten::item) or a copy to the CPU (aten::to
// with a CPU device). On a GPU each is a device synchronisation; on the CPU they are counted all the same.
bool host_read(const at::RecordFunction& fn, int depth) {
  const char* name = fn.name();
  if (depth > 0) return false;
  if (std::strcmp(name, "aten::item") == 0) return true;
  if (std::strcmp(name, "aten::to") != 0) return false;
  for (const auto& v : fn.inputs())
    if (v.isDevice() && v.toDevice().is_cpu()) return true;
  return false;
}

bool embedding(const at::RecordFunction& fn, int) { return std::strcmp(fn.name(), "aten::embedding") == 0; }

}  // namespace

TEST_CASE("a training step reads from the device once (hard selection in every scope but global)", "[train][sync]") {
  rho::test::TempDir dir;
  struct Case {
    std::string name;
    std::vector<std::string> overrides;
    int64_t accum;
  };
  const std::vector<Case> cases = {{"clm", {}, 1},
                                   {"clm_accum", {}, 2},
                                   {"micro_batch", slm_overrides("micro_batch"), 2},
                                   {"sequence", slm_overrides("sequence"), 1},
                                   {"step", slm_overrides("step"), 2},
                                   {"excess_self", {"train.stage=slm", "slm.self_reference=frozen"}, 1}};
  for (const auto& c : cases) {
    auto cfg = run_config(dir, c.name, c.overrides);
    cfg.grad_accum = c.accum;
    rho::Trainer t(cfg, false);
    t.train_step();  // first-step set-up (optimizer state, RoPE tables) is not what is measured
    OpCounter reads(host_read);
    for (int i = 0; i < 3; ++i) {
      const auto m = t.train_step();
      INFO(c.name << " step " << m.step);
      CHECK(reads.take() == 1);
      CHECK(std::isfinite(m.loss));
    }
  }
}

TEST_CASE("scope step with one micro-batch runs no extra forward pass, with several one per micro-batch",
          "[train][slm]") {
  rho::test::TempDir dir;
  auto forwards = [&](const std::string& name, const std::string& scope, int64_t accum) {
    auto cfg = run_config(dir, name, slm_overrides(scope));
    cfg.grad_accum = accum;
    rho::Trainer t(cfg, false);
    OpCounter embeddings(embedding);
    t.train_step();
    return embeddings.take();
  };
  CHECK(forwards("mb1", "micro_batch", 1) == 1);
  CHECK(forwards("step1", "step", 1) == 1);    // the step is the micro-batch
  CHECK(forwards("global1", "global", 1) == 1);  // one process: the global batch is the step
  CHECK(forwards("step2", "step", 2) == 4);    // a scoring forward and a training forward per micro-batch
  CHECK(forwards("mb2", "micro_batch", 2) == 2);
  // And the selection is the same: step scope with one micro-batch trains exactly as micro-batch scope.
  auto a_cfg = run_config(dir, "a", slm_overrides("step")), b_cfg = run_config(dir, "b", slm_overrides("micro_batch"));
  rho::Trainer a(a_cfg, false), b(b_cfg, false);
  for (int i = 0; i < 3; ++i) {
    const auto ma = a.train_step(), mb = b.train_step();
    CHECK(ma.loss == mb.loss);
    CHECK(ma.selected_fraction == mb.selected_fraction);
  }
}

TEST_CASE("bf16 autocast training on the CPU: activation checkpointing changes nothing, step after step",
          "[train][autocast]") {
  // Checkpointing recomputes each layer in the backward pass under the forward's autocast state. Autocast caches
  // bf16 copies of the weights; a copy made by the recompute and left in the cache would be read by the next
  // step's forward after the optimizer changed the weights, and the two runs would part after the first step.
  rho::test::TempDir dir;
  for (const auto& extra : {std::vector<std::string>{}, slm_overrides("micro_batch")}) {
    auto with = [&](std::vector<std::string> o) {
      o.insert(o.end(), extra.begin(), extra.end());
      return o;
    };
    // One run after the other: autocast's cache is one per thread, and another run's scope would clear it.
    auto run = [&](const std::string& name, std::vector<std::string> o) {
      rho::Trainer t(run_config(dir, name, with(std::move(o))), false);
      std::vector<rho::StepMetrics> m;
      for (int i = 0; i < 5; ++i) m.push_back(t.train_step());
      std::vector<at::Tensor> w;
      for (const auto& p : t.model()->parameters()) w.push_back(p.detach().clone());
      return std::pair{m, w};
    };
    const auto [mp, wp] = run("plain", {"train.precision=bf16"});
    const auto [mc, wc] = run("ckpt", {"train.precision=bf16", "train.activation_checkpointing=true"});
    const auto [mf, wf] = run("fp32", {"train.precision=fp32"});
    for (size_t i = 0; i < mp.size(); ++i) {
      INFO("step " << mp[i].step);
      CHECK(mp[i].loss == mc[i].loss);
      CHECK(mp[i].grad_norm == mc[i].grad_norm);
      CHECK(mp[i].loss != mf[i].loss);  // autocast is on: bf16 rounding shows
      CHECK(mp[i].loss == Approx(mf[i].loss).epsilon(2e-2));
    }
    for (size_t i = 0; i < wp.size(); ++i) CHECK(at::equal(wp[i], wc[i]));
  }
}

TEST_CASE("bf16 autocast SLM on the CPU in every scope: the ratio kept, losses near fp32", "[train][slm][autocast]") {
  rho::test::TempDir dir;
  for (const std::string scope : {"micro_batch", "sequence", "step", "global"}) {
    for (const std::string rule : {"excess", "current"}) {
      auto o = slm_overrides(scope, rule);
      if (rule == "excess") o.push_back("slm.self_reference=frozen");
      auto bf = o, fp = o;
      bf.push_back("train.precision=bf16");
      fp.push_back("train.precision=fp32");
      auto bf_cfg = run_config(dir, scope + rule + "bf16", bf), fp_cfg = run_config(dir, scope + rule + "fp32", fp);
      bf_cfg.grad_accum = fp_cfg.grad_accum = 2;
      rho::Trainer b(bf_cfg, false), f(fp_cfg, false);
      for (int i = 0; i < 3; ++i) {
        const auto mb = b.train_step(), mf = f.train_step();
        INFO(scope << " " << rule << " step " << mb.step);
        CHECK(std::isfinite(mb.loss));
        CHECK(mb.selected_fraction == Approx(0.6).margin(0.03));  // sequence scope: ceil(0.6 * 32) per row
        CHECK(mb.loss_all == Approx(mf.loss_all).epsilon(2e-2));
      }
    }
  }
}

TEST_CASE("scoring with precision autocast gives training's forward losses bit for bit and bf16 differs", "[score]") {
  rho::test::TempDir dir;
  rho::test::write_token_dataset(dir.str("d"), rho::test::pattern_documents(30, 64, 4), 400, 64, 0);
  auto data = rho::TokenDataset::open(dir.str("d"));
  rho::Llama trained(rho::test::tiny_llama(64, 64));
  trained->reset_parameters(17);
  const int64_t T = 32, windows = (data.num_tokens() - 1) / T;
  auto scored = [&](rho::ScorePrecision p) {
    rho::Llama m(rho::test::tiny_llama(64, 64));
    m->reset_parameters(17);
    rho::ScoreOptions o;
    o.seq_len = T;
    o.batch_size = windows;  // one forward over every window, as below (same matmul shapes, same rounding)
    o.progress = false;
    o.precision = rho::prepare_scoring_model(*m, at::Device(at::kCPU), p);
    CHECK(o.precision == p);
    return rho::TokenScorer(m, "h", o).score_range(data, 0, windows * T + 1).narrow(0, 1, windows * T);
  };
  // Training's view of the same windows: fp32 weights under bf16 autocast, no gradients (as evaluation).
  at::Tensor want;
  {
    at::NoGradGuard no_grad;
    const rho::AutocastScope ac(at::kCPU, at::kBFloat16);
    auto w = data.slice(0, windows * T + 1).narrow(0, 0, windows * T).view({windows, T});
    auto next = data.slice(1, windows * T).view({windows, T});
    want = trained->token_loss(w, next, rho::ScoreOptions{}.rows_per_chunk).to(at::kFloat).reshape(-1);
  }
  const auto autocast = scored(rho::ScorePrecision::Autocast);
  const auto bf16 = scored(rho::ScorePrecision::BF16), fp32 = scored(rho::ScorePrecision::FP32);
  CHECK(at::equal(autocast, want));
  CHECK(!at::equal(bf16, want));
  CHECK(at::allclose(autocast, fp32, 0.05, 0.05));
  CHECK(at::allclose(bf16, fp32, 0.1, 0.1));
  CHECK(rho::to_string(rho::parse_score_precision("autocast")) == "autocast");
  CHECK_THROWS_WITH(rho::parse_score_precision("fp16"), Catch::Matchers::Contains("'fp16' is not one of"));
}

TEST_CASE("scoring: precision auto runs a model as it was prepared and a rescoring at another precision redoes shards",
          "[score]") {
  rho::test::TempDir dir;
  rho::test::write_token_dataset(dir.str("d"), rho::test::pattern_documents(30, 64, 4), 400, 64, 0);
  auto data = rho::TokenDataset::open(dir.str("d"));
  auto model = [] {
    rho::Llama m(rho::test::tiny_llama(64, 64));
    m->reset_parameters(5);
    return m;
  };
  for (auto p : {rho::ScorePrecision::FP32, rho::ScorePrecision::BF16, rho::ScorePrecision::Autocast}) {
    auto m = model();
    rho::prepare_scoring_model(*m, at::Device(at::kCPU), p);
    CHECK(rho::precision_of(*m) == p);
  }
  auto score = [&](rho::ScorePrecision p) {
    auto m = model();
    rho::ScoreOptions o;
    o.seq_len = 32;
    o.progress = false;
    o.precision = rho::prepare_scoring_model(*m, at::Device(at::kCPU), p);
    // One model hash for both precisions: only the recorded precision tells the shards apart.
    return rho::TokenScorer(m, "same-model", o).score_dataset(data, dir.str("losses"));
  };
  CHECK(score(rho::ScorePrecision::FP32).shards_scored > 0);
  const auto again = score(rho::ScorePrecision::FP32);
  CHECK(again.shards_scored == 0);  // resumable: nothing to redo
  const auto other = score(rho::ScorePrecision::BF16);
  CHECK(other.shards_skipped == 0);  // every shard scored again at the new precision
  CHECK(rho::LossDataset::open(dir.str("losses")).manifest().precision == "bf16");
}
