#include <ATen/ATen.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <algorithm>
#include <nlohmann/json.hpp>
#include <sstream>
#include <fstream>
#include <map>

#include "helpers.h"
#include "librho/data/token_dataset.h"
#include "librho/eval/token_categories.h"
#include "librho/io/hf_checkpoint.h"
#include "librho/score/token_scorer.h"
#include "librho/train/checkpoint.h"
#include "librho/train/config.h"
#include "librho/train/trainer.h"
#include "librho/util/error.h"
#include "librho/util/files.h"

using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {

constexpr int64_t kVocab = 64;

// A run config over a synthetic dataset in `dir`, with small everything.
rho::TrainConfig tiny_run(const rho::test::TempDir& dir, const std::string& name,
                          const std::vector<std::string>& overrides = {}) {
  if (!fs::exists(dir.str("data/manifest.json"))) {
    rho::test::write_token_dataset(dir.str("data"), rho::test::pattern_documents(120, kVocab, 1), 1500, kVocab, 0);
    rho::test::write_token_dataset(dir.str("eval"), rho::test::pattern_documents(20, kVocab, 2), 100000, kVocab, 0);
  }
  const std::string yaml = R"(
run: {out_dir: )" + dir.str(name) + R"(, seed: 3, device: cpu}
model: {vocab_size: 64, hidden_size: 32, intermediate_size: 64, num_layers: 2, num_heads: 4, num_kv_heads: 2,
        max_position_embeddings: 64}
data: {train: )" + dir.str("data") + R"(, seq_len: 32, batch_size: 4, eval: {heldout: )" + dir.str("eval") + R"(},
       eval_every: 5, eval_batches: 2}
optim: {lr: 0.01, min_lr: 0.001, warmup_steps: 2, max_steps: 12}
train: {log_every: 2, checkpoint_every: 4, keep_checkpoints: 2, export_hf: false}
)";
  return rho::TrainConfig::from_yaml_string(yaml, name + ".yaml", overrides);
}

std::vector<at::Tensor> weights(rho::Trainer& t) {
  std::vector<at::Tensor> w;
  for (const auto& p : t.model()->parameters()) w.push_back(p.detach().clone());
  return w;
}

bool same_weights(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (!at::equal(a[i], b[i])) return false;
  return true;
}

}  // namespace

TEST_CASE("train config: unknown keys, wrong types and out-of-range values name file, line and key", "[train]") {
  rho::test::TempDir dir;
  const std::string base = "model: {config: " + rho::test::source_path("configs/model/tiny.yaml") +
                           "}\ndata: {train: x}\n";
  CHECK_THROWS_WITH(rho::TrainConfig::from_yaml_string(base + "optim: {lr: 0.1, lrr: 2}\n", "r.yaml"),
                    Contains("r.yaml:3") && Contains("unknown key 'optim.lrr'"));
  CHECK_THROWS_WITH(rho::TrainConfig::from_yaml_string(base + "optim: {lr: fast}\n", "r.yaml"),
                    Contains("r.yaml:3") && Contains("'optim.lr' has the wrong type"));
  CHECK_THROWS_WITH(rho::TrainConfig::from_yaml_string(base + "slm: {ratio: 1.5}\n", "r.yaml"),
                    Contains("r.yaml:3: 'slm.ratio' = 1.5 is out of range"));
  CHECK_THROWS_WITH(rho::TrainConfig::from_yaml_string(base, "r.yaml", {"optim.lrr=2"}),
                    Contains("r.yaml (--set): unknown key 'optim.lrr'"));
  // Values given by --set are named as such, not by the line of their one-line parse.
  CHECK_THROWS_WITH(rho::TrainConfig::from_yaml_string(base, "r.yaml", {"slm.ratio=1.5"}),
                    Contains("r.yaml (--set): 'slm.ratio' = 1.5 is out of range"));
  CHECK_THROWS_WITH(rho::TrainConfig::from_yaml_string(base, "r.yaml", {"optim.lr=fast"}),
                    Contains("r.yaml (--set)") && Contains("'optim.lr' has the wrong type"));
  CHECK_THROWS_WITH(rho::TrainConfig::from_yaml_string(base + "trian: {}\n", "r.yaml"), Contains("unknown section 'trian'"));
  CHECK_THROWS_WITH(rho::TrainConfig::from_yaml_string(base + "data: {seq_len: 3}\n", "r.yaml"),
                    Contains("r.yaml:3") && Contains("duplicate key 'data'"));
  CHECK_THROWS_WITH(rho::TrainConfig::from_yaml_string(base + "optim: {lr: 1, lr: 2}\n", "r.yaml"),
                    Contains("duplicate key 'optim.lr'"));
  CHECK_THROWS_WITH(rho::TrainConfig::from_yaml_string(base + "train: {stage: slm}\n", "r.yaml"),
                    Contains("needs exactly one of slm.reference_losses, slm.reference_model and slm.self_reference"));
  CHECK_THROWS_WITH(rho::TrainConfig::from_yaml_string(base, "r.yaml", {"optim.lr"}), Contains("section.key=value"));
  // Overrides and the resolved config round trip.
  auto c = rho::TrainConfig::from_yaml_string(base, "r.yaml", {"optim.lr=0.5", "slm.rule=random", "data.seq_len=64"});
  CHECK(c.lr == 0.5);
  CHECK(c.slm.rule == rho::SelectionRule::Random);
  auto d = rho::TrainConfig::from_yaml_string(c.to_yaml(), "resolved.yaml");
  CHECK(d.to_yaml() == c.to_yaml());
  // Learning-rate schedule: warmup, then cosine to min_lr.
  c.warmup_steps = 10;
  c.max_steps = 110;
  c.min_lr = 0.05;
  CHECK(c.lr_at(0) == Approx(0.05));
  CHECK(c.lr_at(9) == Approx(0.5));
  CHECK(c.lr_at(60) == Approx(0.05 + 0.45 * 0.5));
  CHECK(c.lr_at(110) == Approx(0.05));
}

TEST_CASE("shipped training configs parse from any working directory (model.config beside the YAML)", "[train]") {
  for (const auto* name : {"configs/train/reference.yaml", "configs/train/slm.yaml"}) {
    INFO(name);
    const auto c = rho::TrainConfig::from_yaml_file(rho::test::source_path(name));
    CHECK(c.model.hidden_size == 64);  // configs/model/tiny.yaml
    CHECK(c.seq_len == 256);
  }
  CHECK(rho::TrainConfig::from_yaml_file(rho::test::source_path("configs/train/slm.yaml")).stage == rho::Stage::Slm);
  // A relative model.config that is not beside the YAML is still looked up from the working directory, and a
  // missing one is named.
  CHECK_THROWS_WITH(rho::TrainConfig::from_yaml_string("model: {config: nowhere/m.yaml}\ndata: {train: x}\n", "r.yaml"),
                    Contains("nowhere/m.yaml"));
}

TEST_CASE("CLM training: a tiny model's loss falls, with logs, evaluation and checkpoints", "[train]") {
  rho::test::TempDir dir;
  auto cfg = tiny_run(dir, "clm");
  cfg.max_steps = 30;
  cfg.checkpoint_every = 10;
  rho::Trainer t(cfg, false);
  const double first = t.train_step().loss;
  t.run();
  const auto last = t.evaluate().at("heldout");
  INFO("first train loss " << first << ", final held-out loss " << last);
  CHECK(last < 0.6 * first);
  // keep-last-2 checkpoints, a log with train and eval lines, and the resolved config
  CHECK(fs::exists(rho::checkpoint_dir(cfg.out_dir, 30)));
  CHECK(fs::exists(rho::checkpoint_dir(cfg.out_dir, 20)));
  CHECK_FALSE(fs::exists(rho::checkpoint_dir(cfg.out_dir, 10)));
  const auto log = rho::read_text_file(cfg.out_dir + "/log.jsonl");
  CHECK_THAT(log, Contains("\"type\":\"eval\"") && Contains("\"tokens_per_s\""));
  CHECK(fs::exists(cfg.out_dir + "/config.yaml"));
  // The run directory (its newest checkpoint) loads as a model on its own, e.g. for rho_score.
  auto loaded = rho::load_model(cfg.out_dir);
  auto trained = weights(t);
  auto params = loaded->parameters();
  REQUIRE(params.size() == trained.size());
  for (size_t i = 0; i < params.size(); ++i) CHECK(at::equal(params[i], trained[i]));
  CHECK_THROWS_WITH(rho::load_model(dir.str("nowhere")), Contains("not a Hugging Face directory"));
  // A new run into the same folder must not silently overwrite it.
  CHECK_THROWS_WITH(rho::Trainer(cfg, false), Contains("--resume"));
}

TEST_CASE("a resumed run ends with weights identical to an uninterrupted one", "[train]") {
  rho::test::TempDir dir;
  // CLM; SLM; SLM with a moving-average self-reference (saved in the checkpoint) and stochastic selection.
  const std::vector<std::pair<std::string, std::vector<std::string>>> runs = {
      {"clm", {}},
      {"slm", {"train.stage=slm", "slm.rule=current", "slm.ratio=0.5", "slm.scope=step"}},
      {"slm-ema", {"train.stage=slm", "slm.self_reference=ema", "slm.ema_decay=0.9", "slm.weighting=stochastic"}}};
  for (const auto& [stage, overrides] : runs) {
    auto full_cfg = tiny_run(dir, "full-" + stage, overrides);
    full_cfg.grad_accum = 2;
    rho::Trainer full(full_cfg, false);
    full.run();

    auto cut_cfg = full_cfg;
    cut_cfg.out_dir = dir.str("cut-" + stage);
    {
      rho::Trainer first(cut_cfg, false);
      for (int i = 0; i < 5; ++i) first.train_step();
      first.save_checkpoint();
      first.train_step();  // work after the checkpoint is lost in the "crash"
    }
    rho::Trainer resumed(cut_cfg, true);
    CHECK(resumed.step() == 5);
    resumed.run();
    CHECK(same_weights(weights(full), weights(resumed)));
  }
}

TEST_CASE("resume refuses a changed config that affects the steps, names the keys, and logs accepted changes",
          "[train]") {
  rho::test::TempDir dir;
  auto cfg = tiny_run(dir, "run");
  {
    rho::Trainer t(cfg, false);
    for (int i = 0; i < 4; ++i) t.train_step();
    t.save_checkpoint();
  }
  auto changed = cfg;
  changed.slm.ratio = 0.7;  // not used by CLM, but part of what the run is
  changed.max_steps = 30;
  CHECK_THROWS_WITH(rho::Trainer(changed, true),
                    Contains("slm.ratio: 0.6 -> 0.7") && Contains("optim.max_steps: 12 -> 30") &&
                        Contains("--allow-change"));
  // Safe keys (logging, checkpoint cadence, evaluation) change freely; the deliberate one when allowed.
  auto longer = cfg;
  longer.max_steps = 30;
  longer.log_every = 5;
  longer.resume_allow = {"optim.max_steps"};
  rho::Trainer resumed(longer, true);
  CHECK(resumed.step() == 4);
  const auto history = rho::read_text_file(dir.str("run/config_changes.jsonl"));
  CHECK_THAT(history, Contains("\"resumed_at_step\":4") && Contains("optim.max_steps") && Contains("train.log_every"));
  // The same config again: nothing to record.
  rho::Trainer(cfg, true);

  // A checkpoint written before a key existed resumes when the key is at its default (here: the keys of the
  // catch-up policy, taken out of the saved config), and not when it is set otherwise.
  const auto ck_dir = rho::checkpoint_dir(cfg.out_dir, 4);
  auto state = nlohmann::json::parse(rho::read_text_file(ck_dir + "/state.json"));
  std::string old_yaml, line;
  std::istringstream yaml(state["config"].get<std::string>());
  while (std::getline(yaml, line))
    if (line.find("eval_reference") == std::string::npos && line.find("catchup_margin") == std::string::npos &&
        line.find("handoff") == std::string::npos)
      old_yaml += line + "\n";
  state["config"] = old_yaml;
  rho::write_file_atomic(ck_dir + "/state.json", state.dump(2) + "\n");
  CHECK(rho::Trainer(cfg, true).step() == 4);
  auto margin = cfg;
  margin.catchup_margin = 0.5;
  CHECK_THROWS_WITH(rho::Trainer(margin, true), Contains("slm.catchup_margin: (absent) -> 0.5"));
}

TEST_CASE("SLM with ratio 1.0 trains exactly like CLM, in every scope and accumulation", "[train][slm]") {
  // Both divide every micro-batch's loss by the step's weight (CLM: its valid tokens; SLM: what its selections
  // keep, all valid tokens at ratio 1), so the objectives are the same function.
  rho::test::TempDir dir;
  for (const std::string scope : {"micro_batch", "sequence", "step", "global"}) {
    for (const int64_t accum : {int64_t(1), int64_t(2)}) {
      auto clm_cfg = tiny_run(dir, "clm" + scope + std::to_string(accum));
      auto slm_cfg = tiny_run(dir, "slm" + scope + std::to_string(accum),
                              {"train.stage=slm", "slm.rule=current", "slm.ratio=1.0", "slm.scope=" + scope});
      clm_cfg.max_steps = slm_cfg.max_steps = 4;
      clm_cfg.grad_accum = slm_cfg.grad_accum = accum;
      rho::Trainer clm(clm_cfg, false), slm(slm_cfg, false);
      for (int i = 0; i < 4; ++i) {
        const auto a = clm.train_step(), b = slm.train_step();
        INFO(scope << " accum " << accum << " step " << a.step);
        CHECK(a.loss == b.loss);
        CHECK(a.grad_norm == b.grad_norm);
        CHECK(b.selected_fraction == 1.0);
        CHECK(slm.config().stage == rho::Stage::Slm);
      }
      INFO(scope << " accum " << accum);
      CHECK(same_weights(weights(clm), weights(slm)));
    }
  }
}

TEST_CASE("step scope over micro-batches equals micro-batch scope over the same tokens in one batch", "[train][slm]") {
  rho::test::TempDir dir;
  auto a_cfg = tiny_run(dir, "a", {"train.stage=slm", "slm.rule=current", "slm.ratio=0.5", "slm.scope=step"});
  a_cfg.grad_accum = 2;
  a_cfg.batch_size = 2;
  auto b_cfg = tiny_run(dir, "b", {"train.stage=slm", "slm.rule=current", "slm.ratio=0.5"});
  b_cfg.batch_size = 4;
  // The loader's stream is the same for batch 2 x accum 2 and batch 4 (consecutive stream indices). One step:
  // Adam's first update is ~lr * sign(g), which turns rounding noise in tiny gradients into visible weight
  // differences, so the comparison is of the loss and the gradient norm.
  rho::Trainer a(a_cfg, false), b(b_cfg, false);
  const auto ma = a.train_step(), mb = b.train_step();
  CHECK(ma.selected_fraction == mb.selected_fraction);
  CHECK(ma.kept_score == Approx(mb.kept_score).epsilon(1e-6));
  CHECK(ma.loss == Approx(mb.loss).epsilon(1e-6));
  CHECK(ma.grad_norm == Approx(mb.grad_norm).epsilon(1e-5));
}

TEST_CASE("offline (rho_score) and online reference losses give the same selection", "[train][slm][score]") {
  rho::test::TempDir dir;
  auto ref_cfg = tiny_run(dir, "ref");
  ref_cfg.max_steps = 6;
  ref_cfg.export_hf = true;
  rho::Trainer(ref_cfg, false).run();
  const auto ref_dir = ref_cfg.out_dir + "/hf";
  auto ref_model = rho::load_hf_model(ref_dir);
  rho::ScoreOptions so;
  so.seq_len = 32;
  so.batch_size = 3;
  so.progress = false;
  auto data = rho::TokenDataset::open(dir.str("data"));
  rho::TokenScorer(ref_model, ref_model->weights_sha256(), so).score_dataset(data, dir.str("losses"));

  const std::vector<std::string> slm = {"train.stage=slm", "slm.ratio=0.6", "slm.scope=step"};
  auto with = [&](std::string extra) {
    auto o = slm;
    o.push_back(std::move(extra));
    return o;
  };
  auto off_cfg = tiny_run(dir, "offline", with("slm.reference_losses=" + dir.str("losses")));
  auto on_cfg = tiny_run(dir, "online", with("slm.reference_model=" + ref_dir));
  off_cfg.max_steps = on_cfg.max_steps = 5;
  rho::Trainer off(off_cfg, false), on(on_cfg, false);
  for (int i = 0; i < 5; ++i) {
    const auto a = off.train_step(), b = on.train_step();
    CHECK(a.selected_fraction == Approx(0.6).epsilon(0.01));
    CHECK(a.selected_fraction == b.selected_fraction);
    CHECK(a.kept_score == Approx(b.kept_score).epsilon(1e-5));
    CHECK(a.loss == Approx(b.loss).epsilon(1e-6));
  }
  const auto wa = weights(off), wb = weights(on);
  for (size_t i = 0; i < wa.size(); ++i) CHECK(at::allclose(wa[i], wb[i], 1e-5, 1e-6));

  // Losses scored on another dataset are refused.
  rho::test::write_token_dataset(dir.str("other"), rho::test::pattern_documents(50, kVocab, 9), 1500, kVocab, 0);
  auto bad = tiny_run(dir, "bad", with("slm.reference_losses=" + dir.str("losses")));
  bad.train_data = dir.str("other");
  CHECK_THROWS_WITH(rho::Trainer(bad, false), Contains("scored on token dataset"));
}

TEST_CASE("a non-finite loss stops the run naming the last good checkpoint, or skips the step", "[train]") {
  rho::test::TempDir dir;
  auto cfg = tiny_run(dir, "nan");
  rho::Llama m(cfg.model);
  {
    at::NoGradGuard g;
    m->layers->at<rho::DecoderLayerImpl>(0).mlp->up_proj->weight[0][0] = NAN;
  }
  rho::save_hf_model(*m, dir.str("nan-init"));
  cfg.init_from = dir.str("nan-init");
  rho::Trainer t(cfg, false);
  CHECK_THROWS_WITH(t.train_step(), Contains("step 1: non-finite loss") && Contains("last good checkpoint is none"));
  cfg.out_dir = dir.str("nan-skip");
  cfg.nan_policy = rho::NanPolicy::Skip;
  rho::Trainer s(cfg, false);
  CHECK(s.train_step().skipped);
}

namespace {

// The starting weights of a run (from its seed) as a Hugging Face directory.
std::string export_initial_weights(const rho::TrainConfig& cfg, const std::string& dir) {
  rho::Llama init(cfg.model);
  init->reset_parameters(cfg.seed);
  rho::save_hf_model(*init, dir);
  return dir;
}

}  // namespace

TEST_CASE("SLM warm start: plain CLM up to slm.start_step, then selection", "[train][slm]") {
  rho::test::TempDir dir;
  auto clm_cfg = tiny_run(dir, "clm");
  auto slm_cfg = tiny_run(dir, "warm", {"train.stage=slm", "slm.rule=current", "slm.start_step=3"});
  rho::Trainer clm(clm_cfg, false), warm(slm_cfg, false);
  for (int i = 0; i < 3; ++i) CHECK(warm.train_step().selected_fraction == 1.0);
  for (int i = 0; i < 3; ++i) clm.train_step();
  CHECK(same_weights(weights(clm), weights(warm)));
  CHECK(warm.train_step().selected_fraction == Approx(0.6).epsilon(0.02));
  // start_fraction of max_steps (12): step 3.
  auto frac = tiny_run(dir, "frac", {"train.stage=slm", "slm.rule=current", "slm.start_fraction=0.25"});
  CHECK(frac.slm_start_step == 3);
  CHECK_THROWS_WITH(tiny_run(dir, "both", {"slm.start_step=2", "slm.start_fraction=0.5"}), Contains("not both"));
}

TEST_CASE("SLM self-reference frozen equals the starting weights as an online reference", "[train][slm]") {
  rho::test::TempDir dir;
  auto self_cfg = tiny_run(dir, "self", {"train.stage=slm", "slm.self_reference=frozen"});
  auto online_cfg = tiny_run(dir, "online", {"train.stage=slm", "slm.reference_model=" +
                                                                  export_initial_weights(self_cfg, dir.str("init"))});
  rho::Trainer self(self_cfg, false), online(online_cfg, false);
  for (int i = 0; i < 4; ++i) {
    const auto a = self.train_step(), b = online.train_step();
    CHECK(a.loss == b.loss);
    CHECK(a.kept_score == b.kept_score);
  }
  CHECK(same_weights(weights(self), weights(online)));
}

TEST_CASE("the reference's loss on each eval set is logged beside the model's, and catching up is warned once",
          "[train][slm]") {
  rho::test::TempDir dir;
  // The reference: an untrained model (another seed), which the trained model soon passes.
  auto other = tiny_run(dir, "other", {"run.seed=7"});
  const std::string ref_dir = export_initial_weights(other, dir.str("ref"));
  auto cfg = tiny_run(dir, "slm", {"train.stage=slm", "slm.reference_model=" + ref_dir, "slm.catchup_margin=0.5"});
  rho::Trainer t(cfg, false);
  const auto reference = t.evaluate_reference();
  REQUIRE(reference.count("heldout"));
  // It is the reference model's own loss on the eval windows.
  auto as_model = tiny_run(dir, "as_model");
  as_model.init_from = ref_dir;
  CHECK(rho::Trainer(as_model, false).evaluate().at("heldout") == Approx(reference.at("heldout")).epsilon(1e-6));
  t.run();
  std::vector<nlohmann::json> evals, warnings;
  std::istringstream log(rho::read_text_file(cfg.out_dir + "/log.jsonl"));
  for (std::string line; std::getline(log, line);) {
    const auto j = nlohmann::json::parse(line);
    if (j["type"] == "eval") evals.push_back(j);
    if (j["type"] == "warning") warnings.push_back(j);
  }
  REQUIRE(evals.size() == 4);  // steps 0, 5, 10, 12
  for (const auto& e : evals) {
    CHECK(e["reference_loss"].get<double>() == reference.at("heldout"));  // computed once
    CHECK(e["gap"].get<double>() == Approx(e["loss"].get<double>() - reference.at("heldout")));
  }
  CHECK(evals.back()["gap"].get<double>() < evals.front()["gap"].get<double>());
  REQUIRE(warnings.size() >= 1);
  CHECK(std::count_if(warnings.begin(), warnings.end(), [](const auto& w) {
          return w["message"].template get<std::string>().find("caught up with its reference on 'heldout'") != std::string::npos;
        }) == 1);

  // An offline reference alone has no losses for the eval text; slm.eval_reference gives them, in any stage, and
  // so does the reference's rho_score output for the eval set (slm.eval_reference_losses).
  auto clm = tiny_run(dir, "clm_ref", {"slm.eval_reference=" + ref_dir});
  CHECK(rho::Trainer(clm, false).evaluate_reference().at("heldout") == reference.at("heldout"));
  CHECK(rho::Trainer(tiny_run(dir, "plain"), false).evaluate_reference().empty());
  {
    auto ref_model = rho::load_hf_model(ref_dir);
    rho::ScoreOptions so;
    so.seq_len = 32;  // data.seq_len
    so.progress = false;
    rho::TokenScorer(ref_model, ref_model->weights_sha256(), so)
        .score_dataset(rho::TokenDataset::open(dir.str("eval")), dir.str("eval_losses"));
    auto scored = tiny_run(dir, "scored", {"slm.eval_reference_losses=heldout=" + dir.str("eval_losses")});
    CHECK(rho::Trainer(scored, false).evaluate_reference().at("heldout") == Approx(reference.at("heldout")).epsilon(1e-6));
    CHECK_THROWS_WITH(tiny_run(dir, "bad", {"slm.eval_reference_losses=nosuch=" + dir.str("eval_losses")}),
                      Contains("NAME=DIR with NAME a data.eval set"));
    CHECK_THROWS_WITH(rho::Trainer(tiny_run(dir, "wrong", {"slm.eval_reference_losses=heldout=" + dir.str("eval_losses"),
                                                           "data.seq_len=16"}), false),
                      Contains("scored with seq_len 32"));
  }
}

TEST_CASE("slm.handoff: clm, anneal and self take over once caught up, and resume is exact across the switch",
          "[train][slm]") {
  rho::test::TempDir dir;
  auto other = tiny_run(dir, "other", {"run.seed=7"});
  const std::string ref = "slm.reference_model=" + export_initial_weights(other, dir.str("ref"));
  auto handoff_log = [](const rho::TrainConfig& c) {
    std::istringstream log(rho::read_text_file(c.out_dir + "/log.jsonl"));
    std::vector<nlohmann::json> out;
    for (std::string line; std::getline(log, line);)
      if (nlohmann::json::parse(line)["type"] == "handoff") out.push_back(nlohmann::json::parse(line));
    return out;
  };
  // A margin no loss misses: the handoff is made at the step-0 evaluation.
  const std::string always = "slm.catchup_margin=100";
  // clm: from then on, plain CLM, byte for byte.
  {
    auto cfg = tiny_run(dir, "to-clm", {"train.stage=slm", ref, always, "slm.handoff=clm"});
    rho::Trainer t(cfg, false), clm(tiny_run(dir, "clm"), false);
    t.log_evaluation();
    for (int i = 0; i < 4; ++i) {
      CHECK(t.train_step().selected_fraction == 1.0);
      clm.train_step();
    }
    CHECK(same_weights(weights(t), weights(clm)));
  }
  // anneal: the ratio rises linearly from slm.ratio (0.6) to 1 over handoff_steps.
  {
    auto cfg = tiny_run(dir, "anneal", {"train.stage=slm", ref, always, "slm.handoff=anneal", "slm.handoff_steps=4",
                                        "slm.scope=step"});
    rho::Trainer t(cfg, false);
    t.log_evaluation();
    for (double want : {0.6, 0.7, 0.8, 0.9, 1.0, 1.0}) CHECK(t.train_step().selected_fraction == Approx(want).epsilon(0.03));
  }
  // self: a moving average of the model from the switch on, as self_reference ema from the start.
  {
    auto cfg = tiny_run(dir, "to-self", {"train.stage=slm", ref, always, "slm.handoff=self", "slm.ema_decay=0.9"});
    auto ema = tiny_run(dir, "ema", {"train.stage=slm", "slm.self_reference=ema", "slm.ema_decay=0.9"});
    rho::Trainer t(cfg, false), e(ema, false);
    t.log_evaluation();
    REQUIRE(handoff_log(cfg).size() == 1);
    CHECK(handoff_log(cfg)[0]["step"] == 0);
    for (int i = 0; i < 4; ++i) CHECK(t.train_step().kept_score == e.train_step().kept_score);
    CHECK(same_weights(weights(t), weights(e)));
  }
  // Resume across the switch: the handoff made at step 5 (the trained model passes the untrained reference by
  // more than 0.2 nats there, not at step 0) is in the checkpoint with its moving average.
  for (const char* policy : {"self", "anneal"}) {
    INFO(policy);
    const std::vector<std::string> o = {"train.stage=slm", ref, "slm.catchup_margin=-0.2",
                                        std::string("slm.handoff=") + policy, "slm.handoff_steps=4"};
    auto full_cfg = tiny_run(dir, std::string("full-") + policy, o);
    rho::Trainer full(full_cfg, false);
    full.run();
    REQUIRE(handoff_log(full_cfg).size() == 1);
    CHECK(handoff_log(full_cfg)[0]["step"] == 5);
    auto cut_cfg = full_cfg;
    cut_cfg.out_dir = dir.str(std::string("cut-") + policy);
    {
      rho::Trainer first(cut_cfg, false);
      first.log_evaluation();
      for (int i = 0; i < 5; ++i) first.train_step();
      first.log_evaluation();  // the handoff
      for (int i = 0; i < 2; ++i) first.train_step();
      first.save_checkpoint();
      first.train_step();  // lost
    }
    rho::Trainer resumed(cut_cfg, true);
    CHECK(resumed.step() == 7);
    resumed.run();
    CHECK(same_weights(weights(full), weights(resumed)));
  }
  // A handoff needs the reference's loss on an eval set, and a setting it changes.
  CHECK_THROWS_WITH(tiny_run(dir, "bad", {"train.stage=slm", "slm.self_reference=frozen", "slm.handoff=clm"}),
                    Contains("slm.handoff clm needs"));
  CHECK_THROWS_WITH(tiny_run(dir, "bad", {"train.stage=slm", ref, "slm.handoff=anneal", "slm.weighting=softmax"}),
                    Contains("does not use"));
  CHECK_THROWS_WITH(tiny_run(dir, "bad", {"train.stage=slm", ref, "slm.handoff=self", "slm.rule=current"}),
                    Contains("does not use"));
  // With a handoff, the evaluation decides the switch: a resume may not change it unasked.
  auto moved = tiny_run(dir, "cut-self", {"train.stage=slm", ref, "slm.catchup_margin=-0.2", "slm.handoff=self",
                                          "slm.handoff_steps=4", "data.eval_every=3"});
  CHECK_THROWS_WITH(rho::Trainer(moved, true), Contains("data.eval_every: 5 -> 3"));
}

TEST_CASE("SLM self-reference ema: the reference is a moving average of the weights after each step", "[train][slm]") {
  rho::test::TempDir dir;
  auto cfg = tiny_run(dir, "ema", {"train.stage=slm", "slm.self_reference=ema", "slm.ema_decay=0.8"});
  cfg.checkpoint_every = 1;
  cfg.keep_checkpoints = 3;
  rho::Trainer t(cfg, false);
  rho::Llama init(cfg.model);
  init->reset_parameters(cfg.seed);
  std::vector<at::Tensor> ema;
  for (const auto& p : init->parameters()) ema.push_back(p.detach().clone());
  for (int step = 1; step <= 3; ++step) {
    t.train_step();
    t.save_checkpoint();
    const auto w = weights(t);
    for (size_t i = 0; i < ema.size(); ++i) ema[i] = ema[i].lerp(w[i], 0.2);
  }
  const auto ck = rho::load_checkpoint(rho::checkpoint_dir(cfg.out_dir, 3));
  size_t found = 0;
  const auto names = t.model()->named_parameters();
  for (const auto& [name, tensor] : ck.reference) {
    REQUIRE(name.rfind("ema.", 0) == 0);
    for (size_t i = 0; i < names.size(); ++i)
      if (names[i].key() == name.substr(4)) {
        CHECK(at::allclose(tensor, ema[i], 1e-6, 1e-7));
        ++found;
      }
  }
  CHECK(found == ema.size());
}

TEST_CASE("several references: offline and online give the same mean and min, and they differ", "[train][slm][score]") {
  rho::test::TempDir dir;
  std::vector<std::string> hf, losses;
  tiny_run(dir, "x");  // writes the token datasets
  auto data = rho::TokenDataset::open(dir.str("data"));
  for (int r = 0; r < 2; ++r) {
    auto ref_cfg = tiny_run(dir, "ref" + std::to_string(r), {"run.seed=" + std::to_string(10 + r)});
    ref_cfg.max_steps = 3 + 3 * r;
    ref_cfg.export_hf = true;
    rho::Trainer(ref_cfg, false).run();
    hf.push_back(ref_cfg.out_dir + "/hf");
    auto model = rho::load_hf_model(hf.back());
    rho::ScoreOptions so;
    so.seq_len = 32;
    so.progress = false;
    losses.push_back(dir.str("losses" + std::to_string(r)));
    rho::TokenScorer(model, model->weights_sha256(), so).score_dataset(data, losses.back());
  }
  const auto list = [](const std::vector<std::string>& v) { return "[" + v[0] + ", " + v[1] + "]"; };
  std::map<std::string, double> kept_score;
  for (const std::string how : {"mean", "min"}) {
    const std::vector<std::string> slm = {"train.stage=slm", "slm.scope=step", "slm.reference_combine=" + how};
    auto off_o = slm, on_o = slm;
    off_o.push_back("slm.reference_losses=" + list(losses));
    on_o.push_back("slm.reference_model=" + list(hf));
    rho::Trainer off(tiny_run(dir, "off-" + how, off_o), false), on(tiny_run(dir, "on-" + how, on_o), false);
    const auto a = off.train_step(), b = on.train_step();
    CHECK(a.kept_score == Approx(b.kept_score).epsilon(1e-5));
    CHECK(a.loss == Approx(b.loss).epsilon(1e-6));
    kept_score[how] = a.kept_score;
  }
  // The minimum of two losses is below their mean, so excess losses are higher under min.
  CHECK(kept_score["min"] > kept_score["mean"]);
}

TEST_CASE("SLM soft weighting keeps CLM's loss scale: equal weights give the CLM loss", "[train][slm]") {
  rho::test::TempDir dir;
  auto clm_cfg = tiny_run(dir, "clm");
  // Rule current with a clip far below every token loss: every weight is clipped to the same value.
  auto lin_cfg = tiny_run(dir, "lin", {"train.stage=slm", "slm.rule=current", "slm.weighting=linear",
                                       "slm.weight_clip=1e-6"});
  auto soft_cfg = tiny_run(dir, "soft", {"train.stage=slm", "slm.rule=current", "slm.weighting=softmax",
                                         "slm.temperature=1e9", "slm.scope=sequence"});
  rho::Trainer clm(clm_cfg, false), lin(lin_cfg, false), soft(soft_cfg, false);
  for (int i = 0; i < 3; ++i) {
    const auto a = clm.train_step(), b = lin.train_step(), c = soft.train_step();
    CHECK(b.loss == Approx(a.loss).epsilon(1e-5));
    CHECK(c.loss == Approx(a.loss).epsilon(1e-5));
    CHECK(b.selected_fraction == Approx(1.0).epsilon(1e-5));
  }
}

TEST_CASE("token categories: a least-squares line per token, classified at the first and last checkpoint", "[train][eval]") {
  // Checkpoints at 0, 10, 20 tokens; columns: stays high, rises, falls, stays low, and a noisy token whose
  // endpoints (3.0 -> 2.5) are both high but whose fitted line goes 2.25 -> 1.75.
  const auto losses = at::tensor({3.0, 1.0, 3.0, 1.0, 3.0,  //
                                  3.0, 2.0, 2.0, 1.0, 0.5,  //
                                  3.0, 3.0, 1.0, 1.0, 2.5}).view({3, 5});
  const auto r = rho::categorize_tokens(losses, {0, 10, 20}, 2.0);
  CHECK(r.tokens == 5);
  CHECK(r.counts[rho::HighHigh] == 1);
  CHECK(r.counts[rho::LowHigh] == 1);
  CHECK(r.counts[rho::HighLow] == 2);  // the falling token and the noisy one
  CHECK(r.counts[rho::LowLow] == 1);
  CHECK(r.share(rho::HighLow) == Approx(0.4));
  CHECK(r.mean_loss[rho::HighLow] == std::vector<double>{3.0, 1.25, 1.75});
  // Threshold 1.5: the noisy token stays high.
  CHECK(rho::categorize_tokens(losses, {0, 10, 20}, 1.5).counts[rho::HighHigh] == 2);
  // Default: the median fitted start loss (starts {3, 1, 3, 1, 2.25}).
  CHECK(rho::categorize_tokens(losses, {0, 10, 20}, NAN).threshold == Approx(2.25));
  CHECK_THROWS_WITH(rho::categorize_tokens(losses, {5, 5, 5}, 1.0), Contains("different training positions"));
}

TEST_CASE("token categories of a run from its checkpoints", "[train][eval]") {
  rho::test::TempDir dir;
  auto cfg = tiny_run(dir, "run");
  cfg.max_steps = 8;
  cfg.checkpoint_every = 2;
  cfg.keep_checkpoints = 8;
  rho::Trainer(cfg, false).run();
  rho::TokenCategoryOptions opt;
  opt.seq_len = 32;
  opt.windows = 4;
  opt.progress = false;
  const auto r = rho::token_categories(cfg.out_dir, rho::TokenDataset::open(dir.str("eval")), opt);
  CHECK(r.checkpoints.size() == 4);
  CHECK(r.x == std::vector<double>{256, 512, 768, 1024});  // tokens seen (batch 4 x 32 x 2 steps)
  CHECK(r.tokens > 0);
  CHECK(r.tokens <= 4 * 32);
  CHECK(r.counts[0] + r.counts[1] + r.counts[2] + r.counts[3] == r.tokens);
  // Training lowers the loss: more tokens go high -> low than low -> high.
  CHECK(r.counts[rho::HighLow] > r.counts[rho::LowHigh]);
  CHECK_THAT(r.to_json(), Contains("\"H->L\""));
  auto few = cfg;
  few.out_dir = dir.str("few");
  few.max_steps = 2;
  rho::Trainer(few, false).run();
  CHECK_THROWS_WITH(rho::token_categories(few.out_dir, rho::TokenDataset::open(dir.str("eval")), opt),
                    Contains("at least two"));
}
