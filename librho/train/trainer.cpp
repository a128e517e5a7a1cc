#include "librho/train/trainer.h"

#include <ATen/autocast_mode.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/isfinite.h>
#include <fmt/format.h>
#include <torch/cuda.h>
#include <torch/nn/utils/clip_grad.h>

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
#include "librho/score/token_scorer.h"
#include "librho/slm/slm_loss.h"
#include "librho/train/adamw.h"
#include "librho/train/checkpoint.h"
#include "librho/util/error.h"
#include "librho/util/files.h"
#include "librho/util/progress.h"

namespace rho {
namespace fs = std::filesystem;

namespace {

// bf16 autocast on CUDA for the scope of one forward pass (LibTorch has no RAII guard of its own).
class AutocastScope {
 public:
  explicit AutocastScope(bool on) : on_(on) {
    if (!on_) return;
    at::autocast::set_autocast_enabled(at::kCUDA, true);
    at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
    at::autocast::increment_nesting();
  }
  ~AutocastScope() {
    if (!on_) return;
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    at::autocast::set_autocast_enabled(at::kCUDA, false);
  }

 private:
  bool on_;
};

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
  std::vector<Llama> references;                        // online reference models (HF dirs, or self_reference)
  std::vector<std::unique_ptr<LossDataset>> ref_losses;  // offline reference losses
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

  at::Tensor valid_mask(const Batch& b) const {
    auto inputs = b.inputs().to(device);
    auto valid = at::ones_like(inputs, inputs.options().dtype(at::kBool));
    // A target right after EOS is the next document's first token, predicted across the boundary.
    if (cfg.exclude_boundary && eos_id >= 0) valid = inputs != eos_id;
    return valid;
  }

  at::Tensor reference_loss(const Batch& b) {
    std::vector<at::Tensor> losses;
    for (const auto& r : ref_losses) losses.push_back(r->gather(b.target_positions()).to(device));
    for (auto& r : references) {
      at::NoGradGuard no_grad;
      AutocastScope ac(autocast);
      losses.push_back(r->token_loss(b.inputs().to(device), b.targets().to(device)).to(at::kFloat));
    }
    if (losses.empty()) return at::zeros(b.targets().sizes(), at::TensorOptions().dtype(at::kFloat).device(device));
    return combine_reference_losses(losses, cfg.reference_combine);
  }

  // self_reference ema: after each optimizer step, ema <- ema + (1 - decay) * (weights - ema).
  void update_ema() {
    if (cfg.stage != "slm" || cfg.self_reference != "ema") return;
    at::NoGradGuard no_grad;
    auto ema = references.at(0)->parameters();
    auto params = model->parameters();
    for (size_t i = 0; i < params.size(); ++i) ema[i].lerp_(params[i], 1.0 - cfg.ema_decay);
  }

  at::Tensor forward_loss(const Batch& b) {
    AutocastScope ac(autocast);
    return model->token_loss(b.inputs().to(device), b.targets().to(device)).to(at::kFloat);
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

  void zero_grads() {
    for (auto& p : model->parameters())
      if (p.grad().defined()) p.mutable_grad().zero_();
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
  s.autocast = s.device.is_cuda() && cfg.precision != "fp32";
  if (cfg.precision == "bf16" && !s.device.is_cuda()) throw Error("train.precision bf16 needs a CUDA device (CPU runs fp32)");

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
    for (const auto& path : cfg.reference_losses) {
      s.ref_losses.push_back(std::make_unique<LossDataset>(LossDataset::open(path)));
      s.ref_losses.back()->check_matches(*s.train);
    }
    for (const auto& dir : cfg.reference_model) s.references.push_back(load_hf_model(dir));
    // Self-reference: a copy of the starting weights (kept frozen, or moved towards the model by update_ema; a
    // resumed run reloads the average from the checkpoint).
    if (cfg.self_reference != "none") {
      Llama copy(s.model->config);
      at::NoGradGuard no_grad;
      auto src = s.model->parameters();
      auto dst = copy->parameters();
      for (size_t i = 0; i < src.size(); ++i) dst[i].copy_(src[i]);
      for (auto& p : dst) p.requires_grad_(false);
      s.references.push_back(copy);
    }
    for (auto& r : s.references) {
      r->to(s.device);
      r->eval();
    }
  }

  // AdamW groups: no weight decay on norms and embeddings unless asked (they are not "weights" to shrink).
  // ZeRO-1 owners: contiguous runs of parameters (registration order) of about equal size per rank.
  AdamW::Group decay, no_decay;
  decay.weight_decay = cfg.weight_decay;
  int64_t total = 0, before = 0;
  for (const auto& p : s.model->parameters()) total += p.numel();
  for (auto& item : s.model->named_parameters()) {
    const bool exempt = !cfg.decay_norms_and_embeddings &&
                        (item.value().dim() < 2 || item.key().find("embed_tokens") != std::string::npos);
    auto& g = exempt ? no_decay : decay;
    g.names.push_back(item.key());
    g.params.push_back(item.value());
    s.owner[item.key()] = cfg.zero1 ? std::min(d.world_size() - 1, before * d.world_size() / total) : 0;
    before += item.value().numel();
  }
  s.groups = {decay, no_decay};
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
    load_model_weights(*s.model, ck, *latest);
    NamedTensors opt_state;
    std::map<std::string, at::Tensor> ema;
    for (auto& [name, t] : ck.optimizer) {
      if (name == "rng.cpu") {
        auto gen = at::detail::getDefaultCPUGenerator();
        gen.set_state(t);
      } else if (name.rfind("ema.", 0) == 0) {
        ema[name.substr(4)] = t;
      } else {
        opt_state.emplace_back(name, t);
      }
    }
    s.optim->load_state(opt_state, *latest);
    if (cfg.stage == "slm" && cfg.self_reference == "ema") {
      at::NoGradGuard no_grad;
      for (auto& item : s.references.at(0)->named_parameters()) {
        const auto it = ema.find(item.key());
        if (it == ema.end())
          throw Error(fmt::format("{}: no moving-average weights 'ema.{}' (slm.self_reference ema)", *latest,
                                  item.key()));
        item.value().copy_(it->second);
      }
    }
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
  const auto scope = cfg.slm.scope;
  const bool per_micro_batch = scope == SelectionScope::MicroBatch || scope == SelectionScope::Sequence;
  const int64_t accum = cfg.grad_accum;
  std::vector<Batch> batches;
  for (int64_t i = 0; i < accum; ++i) batches.push_back(s.loader->next());

  StepMetrics m;
  m.lr = cfg.lr_at(s.step);
  SelectionStats sel;
  double loss_sum = 0, loss_all_sum = 0;

  // Valid tokens per micro-batch, summed over ranks: the CLM denominators of the global batch.
  std::vector<at::Tensor> valid(accum), masks(accum), ref(accum);
  auto global_valid = at::zeros({accum}, at::kLong);
  for (int64_t i = 0; i < accum; ++i) {
    valid[i] = s.valid_mask(batches[i]);
    global_valid[i] = valid[i].sum().item<int64_t>();
    if (slm) ref[i] = s.reference_loss(batches[i]);
  }
  dist.allreduce_sum(global_valid);
  // Selections over a whole step (scopes step and global) come before any backward.
  const double ratio = cfg.slm.ratio_at(s.step);
  // Random draws differ per step, micro-batch and rank (one process: step * accum + i).
  const uint64_t draw_base =
      (static_cast<uint64_t>(s.step) * dist.world_size() + dist.rank()) * static_cast<uint64_t>(accum);
  double step_weight = 0;
  if (slm && !per_micro_batch) {
    std::vector<at::Tensor> scores;
    for (int64_t i = 0; i < accum; ++i) {
      at::Tensor current;
      {
        at::NoGradGuard no_grad;
        current = s.forward_loss(batches[i]);
      }
      scores.push_back(s.selector.score(current, ref[i], valid[i], draw_base + i));
    }
    masks = scope == SelectionScope::Global ? s.selector.select_global(scores, valid, ratio, draw_base, dist, &sel)
                                            : s.selector.select(scores, valid, ratio, draw_base, &sel);
    auto weight = at::full({1}, sel.weight_sum, at::kDouble);
    dist.allreduce_sum(weight);
    step_weight = std::max(weight.item<double>(), 1.0);
  }

  for (int64_t i = 0; i < accum; ++i) {
    auto token_loss = s.forward_loss(batches[i]);
    double denom;
    if (!slm) {
      masks[i] = valid[i];
      denom = std::max<int64_t>(global_valid[i].item<int64_t>(), 1) * accum;
    } else if (per_micro_batch) {
      SelectionStats mb;
      masks[i] = s.selector.select({s.selector.score(token_loss, ref[i], valid[i], draw_base + i)}, {valid[i]}, ratio,
                                   draw_base + i, &mb)[0];
      sel.add(mb);
      auto weight = at::full({1}, mb.weight_sum, at::kDouble);
      dist.allreduce_sum(weight);
      denom = std::max(weight.item<double>(), 1.0) * accum;
    } else {
      denom = step_weight;
    }
    auto loss = masked_loss_sum(token_loss, masks[i], denom);
    if (i == accum - 1) s.reducer->arm();  // the last backward all-reduces gradients as they become ready
    loss.backward();
    loss_sum += loss.item<double>();
    const auto detached = token_loss.detach();
    loss_all_sum += (detached * valid[i].to(at::kFloat)).sum().item<double>();
    m.tokens += batches[i].inputs().numel();
  }
  s.reducer->finish();

  // Metrics over the global batch.
  auto sums = at::tensor({loss_sum, loss_all_sum, static_cast<double>(m.tokens), static_cast<double>(sel.valid),
                          sel.weight_sum, sel.weight_sq_sum, sel.kept_score_sum, sel.dropped_score_sum,
                          static_cast<double>(sel.dropped), static_cast<double>(sel.nan_scores)}, at::kDouble);
  dist.allreduce_sum(sums);
  const auto* g = sums.data_ptr<double>();
  m.loss = g[0];
  m.loss_all = g[1] / std::max<int64_t>(global_valid.sum().item<int64_t>(), 1);
  m.tokens = static_cast<int64_t>(g[2]);
  if (slm) {
    sel.valid = static_cast<int64_t>(g[3]);
    sel.weight_sum = g[4];
    sel.weight_sq_sum = g[5];
    sel.kept_score_sum = g[6];
    sel.dropped_score_sum = g[7];
    sel.dropped = static_cast<int64_t>(g[8]);
    sel.nan_scores = static_cast<int64_t>(g[9]);
    m.selected_fraction = sel.effective_fraction();
    m.kept_score = sel.kept_score_mean();
    m.dropped_score = sel.dropped_score_mean();
  }

  // Gradient norm (and clipping); a non-finite loss or norm stops the run or skips the step. Gradients and the
  // loss are global here, so every rank takes the same decision.
  auto params = s.model->parameters();
  const double max_norm = cfg.grad_clip > 0 ? cfg.grad_clip : std::numeric_limits<double>::infinity();
  m.grad_norm = torch::nn::utils::clip_grad_norm_(params, max_norm);
  if (!std::isfinite(m.loss) || !std::isfinite(m.grad_norm)) {
    if (cfg.nan_policy == "stop") {
      const auto last = latest_checkpoint(cfg.out_dir);
      throw Error(fmt::format("step {}: non-finite {} ({}); stopping. The last good checkpoint is {}", s.step + 1,
                              std::isfinite(m.loss) ? "gradient norm" : "loss",
                              std::isfinite(m.loss) ? m.grad_norm : m.loss, last ? *last : "none"));
    }
    m.skipped = true;
    ++s.skipped_steps;
  } else {
    s.optim->step(m.lr);
    s.share_updated_params();
    s.update_ema();
  }
  s.zero_grads();
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
      auto valid = s.valid_mask(b).to(at::kFloat);
      auto loss = s.forward_loss(b);
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
    if (s.cfg.stage == "slm" && s.cfg.self_reference == "ema")
      for (const auto& item : s.references.at(0)->named_parameters())
        ck.optimizer.emplace_back("ema." + item.key(), item.value());
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
