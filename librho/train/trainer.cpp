#include "librho/train/trainer.h"

#include <ATen/autocast_mode.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/isfinite.h>
#include <ATen/ops/stack.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/cuda.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>

#include "librho/data/token_dataset.h"
#include "librho/dist/context.h"
#include "librho/dist/grad_reducer.h"
#include "librho/io/hf_checkpoint.h"
#include "librho/model/autocast.h"
#include "librho/score/token_scorer.h"
#include "librho/slm/reference.h"
#include "librho/slm/slm_loss.h"
#include "librho/train/adamw.h"
#include "librho/train/checkpoint.h"
#include "librho/util/error.h"
#include "librho/util/files.h"
#include "librho/util/progress.h"

namespace rho {
namespace fs = std::filesystem;

namespace {

// A flat copy of `tensors` made on `root` is sent to every rank and copied back into their `tensors`.
void broadcast_flat(const DistContext& dist, const std::vector<at::Tensor>& tensors, int64_t root) {
  if (tensors.empty()) return;
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> flat;
  for (const auto& t : tensors) flat.push_back(t.detach().reshape(-1));
  auto buf = at::cat(flat);
  dist.broadcast(buf, root);
  if (dist.rank() == root) return;
  int64_t off = 0;
  for (const auto& t : tensors) {
    t.detach().copy_(buf.narrow(0, off, t.numel()).view(t.sizes()));
    off += t.numel();
  }
}

// A resumed run must be the run it continues: a changed key that affects the steps is refused (naming it, with
// both values) unless train.resume_allow (rho_pretrain --allow-change) names it; keys that never affect the steps
// may change. Accepted changes are appended to out_dir/config_changes.jsonl, so the run's history stays readable.
void check_resume_changes(const TrainConfig& cfg, const std::string& checkpoint_yaml, const std::string& checkpoint,
                          int64_t step, bool write_history) {
  std::vector<std::string> refused;
  nlohmann::json accepted = nlohmann::json::array();
  for (const auto& c : cfg.differences(checkpoint_yaml)) {
    const bool allowed = TrainConfig::resume_safe(c.key) ||
                         std::find(cfg.resume_allow.begin(), cfg.resume_allow.end(), c.key) != cfg.resume_allow.end();
    if (allowed)
      accepted.push_back({{"key", c.key}, {"from", c.before}, {"to", c.after}});
    else
      refused.push_back(fmt::format("{}: {} -> {}", c.key, c.before.empty() ? "(absent)" : c.before,
                                    c.after.empty() ? "(absent)" : c.after));
  }
  if (!refused.empty())
    throw Error(fmt::format("--resume from {}: the config differs from the run's in {}; a resumed run would no longer "
                            "be the run it continues. Restore them, or accept each deliberately with --allow-change "
                            "KEY (e.g. --allow-change optim.max_steps to train longer)",
                            checkpoint, fmt::join(refused, "; ")));
  if (write_history && !accepted.empty()) {
    std::ofstream(fs::path(cfg.out_dir) / "config_changes.jsonl", std::ios::app)
        << nlohmann::json({{"resumed_at_step", step}, {"changes", accepted}}).dump() << "\n";
  }
}

int64_t step_of_checkpoint(const std::string& dir) {
  return std::stoll(fs::path(dir).filename().string().substr(std::string("step-").size()));
}

}  // namespace

struct Trainer::State {
  TrainConfig cfg;
  std::shared_ptr<DistContext> dist;
  at::Device device{at::kCPU};
  bool autocast = false;
  Llama model{nullptr};
  std::unique_ptr<ReferenceSource> reference;  // SLM's reference losses (librho/slm/reference.h)
  std::shared_ptr<TokenDataset> train;
  std::unique_ptr<BatchLoader> loader;
  std::vector<std::pair<std::string, std::shared_ptr<TokenDataset>>> evals;
  std::unique_ptr<AdamW> optim;               // under ZeRO-1: this rank's parameters only
  std::vector<AdamW::Group> groups;            // every parameter, grouped for AdamW
  std::map<std::string, int64_t> owner;        // ZeRO-1: the rank stepping each parameter (all 0 otherwise)
  std::unique_ptr<GradBucketReducer> reducer;
  ExcessLossSelector selector{SLMOptions{}};
  int64_t step = 0, tokens_seen = 0, skipped_steps = 0;
  int64_t eos_id = -1;
  std::ofstream log;

  // A host tensor on the training device: from pinned memory without blocking the host (pageable memory would
  // make the copy wait for the device's queue to drain).
  at::Tensor to_device(const at::Tensor& t) const { return to_device_async(t, device); }

  // One micro-batch on the device: its tokens copied once; inputs and targets are views of them.
  struct DeviceBatch {
    at::Tensor tokens, valid, ref;
    at::Tensor inputs() const { return tokens.narrow(1, 0, tokens.size(1) - 1); }
    at::Tensor targets() const { return tokens.narrow(1, 1, tokens.size(1) - 1); }
  };

  DeviceBatch load(const Batch& b, bool with_reference) {
    DeviceBatch d;
    d.tokens = to_device(b.tokens);
    const auto inputs = d.inputs();
    // A target right after EOS is the next document's first token, predicted across the boundary.
    d.valid = valid_targets(inputs, eos_id, cfg.exclude_boundary);
    if (with_reference) d.ref = reference->losses(b, d.tokens);
    return d;
  }

  at::Tensor forward_loss(const DeviceBatch& b) {
    AutocastScope ac(device.type(), at::kBFloat16, autocast);
    return model->token_loss(b.inputs(), b.targets()).to(at::kFloat);
  }

  void write_log(const nlohmann::json& j) {
    if (!dist->is_main()) return;
    log << j.dump() << "\n";
    log.flush();
  }

  // The AdamW groups restricted to the parameters `rank` steps.
  std::vector<AdamW::Group> groups_of(int64_t rank) const {
    auto out = groups;
    for (auto& g : out) {
      AdamW::Group kept;
      kept.weight_decay = g.weight_decay;
      for (size_t i = 0; i < g.names.size(); ++i)
        if (owner.at(g.names[i]) == rank) {
          kept.names.push_back(g.names[i]);
          kept.params.push_back(g.params[i]);
        }
      g = std::move(kept);
    }
    return out;
  }

  // ZeRO-1: after each rank stepped its parameters, every rank gets every updated parameter.
  void share_updated_params() {
    if (!cfg.zero1 || !dist->distributed()) return;
    for (int64_t r = 0; r < dist->world_size(); ++r) {
      std::vector<at::Tensor> mine;
      for (const auto& g : groups_of(r)) mine.insert(mine.end(), g.params.begin(), g.params.end());
      broadcast_flat(*dist, mine, r);
    }
  }

  // Gradients are dropped, not zeroed: the next backward then writes them instead of adding to zeros.
  void zero_grads() {
    for (auto& p : model->parameters()) p.mutable_grad() = at::Tensor();
  }
};

Trainer::Trainer(TrainConfig config, bool resume, std::shared_ptr<DistContext> dist) : s_(std::make_unique<State>()) {
  auto& s = *s_;
  s.cfg = std::move(config);
  auto& cfg = s.cfg;
  if (cfg.device == "cuda" && !torch::cuda::is_available()) throw Error("run.device is cuda but no CUDA device is present");
  s.device = (cfg.device == "cuda" || (cfg.device == "auto" && torch::cuda::is_available())) ? at::Device(at::kCUDA)
                                                                                              : at::Device(at::kCPU);
  s.dist = dist ? std::move(dist) : std::make_shared<DistContext>(s.device);
  const auto& d = *s.dist;
  if (d.distributed()) {
    if (d.device().is_cuda() != s.device.is_cuda())
      throw Error(fmt::format("run.device resolves to {} but the process group runs on {} ({})", s.device.str(),
                              d.device().str(), d.backend()));
    s.device = d.device();
  }
  // bf16 autocast: by default on CUDA; on the CPU when asked (slow, but the same recipe as on the GPU).
  s.autocast = cfg.precision == "bf16" || (cfg.precision == "auto" && s.device.is_cuda());

  // Model: from a Hugging Face directory, or freshly initialised from the seed.
  if (!cfg.init_from.empty()) {
    s.model = load_hf_model(cfg.init_from);
    cfg.model = s.model->config;
  } else {
    s.model = Llama(cfg.model);
    s.model->reset_parameters(cfg.seed);
  }
  s.model->activation_checkpointing = cfg.activation_checkpointing;
  s.model->to(s.device);

  s.train = std::make_shared<TokenDataset>(TokenDataset::open(cfg.train_data));
  s.eos_id = s.train->manifest().eos_id;
  if (s.train->manifest().vocab_size > cfg.model.vocab_size)
    throw Error(fmt::format("{}: tokenizer vocabulary {} exceeds the model's vocab_size {}", cfg.train_data,
                            s.train->manifest().vocab_size, cfg.model.vocab_size));
  LoaderOptions lo;
  lo.seq_len = cfg.seq_len;
  lo.batch_size = cfg.batch_size;
  lo.seed = cfg.seed;
  lo.rank = d.rank();
  lo.world_size = d.world_size();
  lo.pin_memory = s.device.is_cuda();
  s.loader = std::make_unique<BatchLoader>(s.train, lo);
  for (const auto& e : cfg.eval_sets) s.evals.emplace_back(e.name, std::make_shared<TokenDataset>(TokenDataset::open(e.path)));

  if (cfg.stage == "slm") {
    s.selector = ExcessLossSelector(cfg.slm);
    ReferenceOptions ro;
    ro.loss_dirs = cfg.reference_losses;
    ro.model_dirs = cfg.reference_model;
    ro.self = parse_self_reference(cfg.self_reference);
    ro.ema_decay = cfg.ema_decay;
    ro.combine = cfg.reference_combine;
    s.reference = std::make_unique<ReferenceSource>(ro, *s.train, s.model, s.device, s.autocast);
  }

  // AdamW groups: no weight decay on norms and embeddings unless asked (they are not "weights" to shrink).
  // ZeRO-1 owners: contiguous runs of parameters (registration order) of about equal size per rank.
  std::vector<std::pair<std::string, at::Tensor>> named;
  for (auto& item : s.model->named_parameters()) named.emplace_back(item.key(), item.value());
  s.groups = adamw_groups(named, cfg.weight_decay, cfg.decay_norms_and_embeddings);
  int64_t total = 0, before = 0;
  for (const auto& [name, p] : named) total += p.numel();
  for (const auto& [name, p] : named) {
    s.owner[name] = cfg.zero1 ? std::min(d.world_size() - 1, before * d.world_size() / total) : 0;
    before += p.numel();
  }
  s.optim = std::make_unique<AdamW>(cfg.zero1 ? s.groups_of(d.rank()) : s.groups, cfg.beta1, cfg.beta2, cfg.eps);
  s.reducer = std::make_unique<GradBucketReducer>(s.model->parameters(), *s.dist, cfg.bucket_mb);

  if (d.is_main()) fs::create_directories(cfg.out_dir);
  const auto log_path = (fs::path(cfg.out_dir) / "log.jsonl").string();
  if (resume) {
    // Every rank resumes from rank 0's newest checkpoint (out_dir is on a shared file system).
    auto latest = latest_checkpoint(cfg.out_dir);
    auto latest_step = at::full({1}, latest ? step_of_checkpoint(*latest) : int64_t(-1), at::kLong);
    d.broadcast(latest_step, 0);
    if (latest_step.item<int64_t>() < 0) throw Error(fmt::format("{}: --resume but no checkpoint was found", cfg.out_dir));
    latest = checkpoint_dir(cfg.out_dir, latest_step.item<int64_t>());
    auto ck = load_checkpoint(*latest);
    if (ck.state.world_size != d.world_size())
      throw Error(fmt::format("{}: written by {} process(es), resumed with {}: the data order and the ZeRO-1 shards "
                              "depend on the world size, so resume with {} (or start a new run from its weights)",
                              *latest, ck.state.world_size, d.world_size(), ck.state.world_size));
    check_resume_changes(cfg, ck.state.config_yaml, *latest, ck.state.step, d.is_main());
    load_model_weights(*s.model, ck, *latest);
    NamedTensors opt_state;
    std::map<std::string, at::Tensor> ema;
    for (auto& [name, t] : ck.optimizer) {
      if (name == "rng.cpu") {
        auto gen = at::detail::getDefaultCPUGenerator();
        gen.set_state(t);
      } else if (name.rfind("ema.", 0) == 0) {
        ema[name] = t;
      } else {
        opt_state.emplace_back(name, t);
      }
    }
    s.optim->load_state(opt_state, *latest);
    if (s.reference) s.reference->load_state(ema, *latest);
    s.step = ck.state.step;
    s.tokens_seen = ck.state.tokens_seen;
    s.loader->seek(ck.state.loader_step);
    // Drop log lines of steps after the checkpoint (the interrupted run's), so the log reads as one run.
    if (d.is_main() && fs::exists(log_path)) {
      std::ifstream in(log_path);
      std::string line, kept;
      while (std::getline(in, line)) {
        try {
          if (nlohmann::json::parse(line).value("step", int64_t(0)) <= s.step) kept += line + "\n";
        } catch (const nlohmann::json::exception&) {  // a torn last line from the kill
        }
      }
      write_file_atomic(log_path, kept);
    }
    if (d.is_main()) std::cerr << fmt::format("resumed from {} (step {})\n", *latest, s.step);
  } else if (latest_checkpoint(cfg.out_dir)) {
    throw Error(fmt::format("{}: already holds checkpoints; pass --resume to continue or choose another out_dir",
                            cfg.out_dir));
  } else if (d.is_main()) {
    write_file_atomic(log_path, std::string());
  }
  if (d.is_main()) {
    write_file_atomic((fs::path(cfg.out_dir) / "config.yaml").string(), cfg.to_yaml());
    s.log.open(log_path, std::ios::app);
  }
}

Trainer::~Trainer() = default;
Llama& Trainer::model() { return s_->model; }
int64_t Trainer::step() const { return s_->step; }
const TrainConfig& Trainer::config() const { return s_->cfg; }

StepMetrics Trainer::train_step() {
  auto& s = *s_;
  const auto& cfg = s.cfg;
  const auto& dist = *s.dist;
  const bool slm = cfg.stage == "slm" && s.step >= cfg.slm_start_step;  // before start_step: plain CLM
  const int64_t accum = cfg.grad_accum;
  // Every micro-batch of the step goes to the device first (its copies are queued, the host does not wait).
  std::vector<State::DeviceBatch> batches;
  for (int64_t i = 0; i < accum; ++i) batches.push_back(s.load(s.loader->next(), slm));

  // From here on nothing is read back by the host until the step's metrics, once, at the end.
  StepMetrics m;
  m.lr = cfg.lr_at(s.step);
  const auto on_device = at::TensorOptions().dtype(at::kDouble).device(s.device);
  auto loss_sum = at::zeros({}, on_device), loss_all_sum = at::zeros({}, on_device);

  // The step's selection and loss denominator (librho/slm/slm_loss.h: the same API research code uses).
  std::vector<MicroBatchTargets> targets;
  for (const auto& b : batches) targets.push_back({b.valid, b.ref});
  SLMStep plan = slm ? SLMStep(s.selector, s.step, std::move(targets), &dist) : [&] {
    std::vector<at::Tensor> valid;
    for (const auto& b : batches) valid.push_back(b.valid);
    return SLMStep::causal(std::move(valid), &dist);
  }();
  // Scopes step and global select over every micro-batch before any backward: a no-grad forward scores each.
  if (plan.needs_scores())
    for (int64_t i = 0; i < accum; ++i) {
      at::NoGradGuard no_grad;
      plan.score(i, s.forward_loss(batches[i]));
    }
  for (int64_t i = 0; i < accum; ++i) {
    auto token_loss = s.forward_loss(batches[i]);
    auto loss = plan.loss(i, token_loss).loss;
    if (i == accum - 1) s.reducer->arm();  // the last backward all-reduces gradients as they become ready
    loss.backward();
    loss_sum += loss.detach().to(at::kDouble);
    loss_all_sum += (token_loss.detach() * batches[i].valid.to(at::kFloat)).sum().to(at::kDouble);
  }
  s.reducer->finish();

  // Metrics over the global batch: the loss and the selection statistics of every rank.
  auto sums = at::cat({at::stack({loss_sum, loss_all_sum}),
                       plan.tally().sums().defined() ? plan.tally().sums()
                                                     : at::zeros({SelectionTally::kFields}, on_device)});
  dist.allreduce_sum(sums);

  // Gradient norm (and clipping). A non-finite loss or norm leaves the weights as they were (the optimizer reads
  // found_inf on the device); the host learns of it from the metrics below. Gradients and the loss are global
  // here, so every rank takes the same decision.
  const double max_norm = cfg.grad_clip > 0 ? cfg.grad_clip : std::numeric_limits<double>::infinity();
  const auto norm = clip_grad_norm(s.model->parameters(), max_norm);
  const auto found_inf = (~at::isfinite(sums[0]) | ~at::isfinite(norm)).to(at::kFloat);
  s.optim->step(m.lr, found_inf);
  s.share_updated_params();
  if (s.reference) s.reference->after_step(s.model, found_inf);
  s.zero_grads();

  // The step's one read from the device.
  const auto host = at::cat({sums, at::stack({plan.global_valid().to(at::kDouble), norm.to(at::kDouble),
                                              found_inf.to(at::kDouble)})})
                        .to(at::kCPU);
  const double* g = host.data_ptr<double>();
  const double* rest = g + 2 + SelectionTally::kFields;
  m.loss = g[0];
  m.loss_all = g[1] / std::max(rest[0], 1.0);
  m.grad_norm = rest[1];
  for (const auto& b : batches) m.tokens += b.valid.numel() * dist.world_size();
  if (slm) {
    const auto sel = SelectionTally::stats_of(g + 2);
    m.selected_fraction = sel.effective_fraction();
    m.kept_score = sel.kept_score_mean();
    m.dropped_score = sel.dropped_score_mean();
  }
  if (rest[2] != 0) {
    if (cfg.nan_policy == "stop") {
      const auto last = latest_checkpoint(cfg.out_dir);
      throw Error(fmt::format("step {}: non-finite {} ({}); stopping. The last good checkpoint is {}", s.step + 1,
                              std::isfinite(m.loss) ? "gradient norm" : "loss",
                              std::isfinite(m.loss) ? m.grad_norm : m.loss, last ? *last : "none"));
    }
    m.skipped = true;
    ++s.skipped_steps;
  }
  ++s.step;
  s.tokens_seen += m.tokens;
  m.step = s.step;
  return m;
}

std::map<std::string, double> Trainer::evaluate() {
  auto& s = *s_;
  std::map<std::string, double> out;
  at::NoGradGuard no_grad;
  s.model->eval();
  for (const auto& [name, data] : s.evals) {
    // The first eval_batches * batch_size windows in order: the same tokens at every evaluation.
    const int64_t T = s.cfg.seq_len, windows = (data->num_tokens() - 1) / T;
    const int64_t n = std::min(windows, s.cfg.eval_batches * s.cfg.batch_size);
    if (n == 0) throw Error(fmt::format("{}: fewer than seq_len+1 tokens to evaluate on", data->dir()));
    double sum = 0;
    int64_t count = 0;
    const int64_t stride = s.cfg.batch_size * s.dist->world_size();  // rank r takes every world-th batch
    for (int64_t w0 = s.cfg.batch_size * s.dist->rank(); w0 < n; w0 += stride) {
      Batch b;
      std::vector<at::Tensor> rows;
      for (int64_t w = w0; w < std::min(n, w0 + s.cfg.batch_size); ++w) rows.push_back(data->slice(w * T, T + 1));
      b.tokens = at::stack(rows);
      const auto d = s.load(b, /*with_reference=*/false);
      auto valid = d.valid.to(at::kFloat);
      auto loss = s.forward_loss(d);
      sum += (loss * valid).sum().item<double>();
      count += valid.sum().item<int64_t>();
    }
    auto totals = at::tensor({sum, static_cast<double>(count)}, at::kDouble);
    s.dist->allreduce_sum(totals);
    out[name] = totals[0].item<double>() / std::max<double>(totals[1].item<double>(), 1);
  }
  s.model->train();
  return out;
}

void Trainer::save_checkpoint() {
  auto& s = *s_;
  const auto& dist = *s.dist;
  // ZeRO-1: rank 0 collects every rank's optimizer shard, so the checkpoint is the same as without sharding.
  NamedTensors optimizer = s.optim->state();
  if (s.cfg.zero1 && dist.distributed()) {
    for (int64_t r = 1; r < dist.world_size(); ++r) {
      if (dist.rank() != r && !dist.is_main()) continue;
      auto shard = dist.rank() == r ? optimizer : AdamW(s.groups_of(r), s.cfg.beta1, s.cfg.beta2, s.cfg.eps).state();
      if (shard.empty()) continue;
      std::vector<at::Tensor> flat;
      for (const auto& [name, t] : shard) flat.push_back(t.reshape(-1).to(at::kFloat));
      auto buf = at::cat(flat);
      if (dist.rank() == r) {
        dist.send(buf, 0);
        continue;
      }
      dist.recv(buf, r);
      int64_t off = 0;
      for (auto& [name, t] : shard) {
        t.copy_(buf.narrow(0, off, t.numel()).view(t.sizes()));
        off += t.numel();
      }
      optimizer.insert(optimizer.end(), shard.begin(), shard.end());
    }
  }
  if (dist.is_main()) {
    Checkpoint ck;
    ck.state.step = s.step;
    ck.state.loader_step = s.loader->step();
    ck.state.tokens_seen = s.tokens_seen;
    ck.state.world_size = dist.world_size();
    ck.state.config_yaml = s.cfg.to_yaml();
    ck.state.model_config_json = s.model->config.to_hf_json();
    for (const auto& item : s.model->named_parameters()) ck.model.emplace_back(item.key(), item.value());
    ck.optimizer = std::move(optimizer);
    ck.optimizer.emplace_back("rng.cpu", at::detail::getDefaultCPUGenerator().get_state());
    if (s.reference)
      for (auto& entry : s.reference->state()) ck.optimizer.push_back(std::move(entry));
    rho::save_checkpoint(s.cfg.out_dir, ck, s.cfg.keep_checkpoints);
  }
  // No rank runs ahead of a checkpoint that is not yet on disk (a kill then resumes where all ranks agree).
  dist.barrier();
}

void Trainer::export_hf(const std::string& dir) {
  if (s_->dist->is_main()) save_hf_model(*s_->model, dir);
}

void Trainer::run() {
  auto& s = *s_;
  const auto& cfg = s.cfg;
  std::optional<Progress> progress;  // rank 0 reports
  if (s.dist->is_main())
    progress.emplace(fmt::format("{}[{}]", cfg.stage, fs::path(cfg.out_dir).filename().string()), cfg.max_steps, "step");
  auto t0 = std::chrono::steady_clock::now();
  int64_t tokens_since = 0;
  auto log_eval = [&] {
    for (const auto& [name, loss] : evaluate()) {
      s.write_log({{"type", "eval"}, {"step", s.step}, {"tokens", s.tokens_seen}, {"set", name}, {"loss", loss},
                   {"ppl", std::exp(loss)}});
      if (s.dist->is_main())
        std::cerr << fmt::format("\n  eval step {} {}: loss {:.4f} ppl {:.2f}\n", s.step, name, loss, std::exp(loss));
    }
  };
  if (s.step == 0 && !s.evals.empty()) log_eval();
  while (s.step < cfg.max_steps) {
    const auto m = train_step();
    tokens_since += m.tokens;
    if (m.step % cfg.log_every == 0 || m.step == cfg.max_steps || m.skipped) {
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      const double tps = tokens_since / std::max(secs, 1e-9);
      t0 = std::chrono::steady_clock::now();
      tokens_since = 0;
      nlohmann::json j = {{"type", "train"}, {"step", m.step}, {"tokens", s.tokens_seen}, {"loss", m.loss},
                          {"loss_all", m.loss_all}, {"lr", m.lr}, {"grad_norm", m.grad_norm},
                          {"tokens_per_s", tps}, {"selected_fraction", m.selected_fraction}};
      if (cfg.stage == "slm") {
        j["kept_score"] = std::isfinite(m.kept_score) ? nlohmann::json(m.kept_score) : nlohmann::json();
        j["dropped_score"] = std::isfinite(m.dropped_score) ? nlohmann::json(m.dropped_score) : nlohmann::json();
      }
      if (m.skipped) j["skipped"] = true;
      s.write_log(j);
      if (progress)
        progress->update(m.step, fmt::format("loss {:.4f} lr {:.2e} {} tok/s sel {:.2f}", m.loss, m.lr,
                                          human_count(tps), m.selected_fraction));
    }
    if (!s.evals.empty() && (m.step % cfg.eval_every == 0 || m.step == cfg.max_steps)) log_eval();
    if (m.step % cfg.checkpoint_every == 0 || m.step == cfg.max_steps) save_checkpoint();
  }
  if (progress)
    progress->finish(fmt::format("{} steps, {} tokens, {} skipped", s.step, human_count(s.tokens_seen), s.skipped_steps));
  if (cfg.export_hf) export_hf((fs::path(cfg.out_dir) / "hf").string());
}

}  // namespace rho
