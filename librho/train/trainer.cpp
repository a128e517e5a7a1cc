#include "librho/train/trainer.h"

#include <ATen/autocast_mode.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/isfinite.h>
#include <ATen/ops/stack.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/cuda.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>

#include "librho/data/token_dataset.h"
#include "librho/dist/context.h"
#include "librho/dist/grad_reducer.h"
#include "librho/dist/sharded.h"
#include "librho/io/hf_checkpoint.h"
#include "librho/model/autocast.h"
#include "librho/model/memory_plan.h"
#include "librho/score/token_scorer.h"
#include "librho/train/tensorboard.h"
#include "librho/slm/reference.h"
#include "librho/slm/slm_loss.h"
#include "librho/train/adamw.h"
#include "librho/train/checkpoint.h"
#include "librho/util/enum_names.h"
#include "librho/util/error.h"
#include "librho/util/files.h"
#include "librho/util/peak_memory.h"
#include "librho/util/progress.h"

namespace rho {
namespace fs = std::filesystem;

namespace {

// Another world size (a sharded checkpoint reshards) must keep the global batch: data.batch_size x world size.
void check_global_batch_kept(const TrainConfig& cfg, const std::vector<TrainConfig::Change>& changes,
                             const std::string& checkpoint, int64_t world_before, int64_t world_after) {
  if (world_before == world_after) return;
  int64_t batch_before = cfg.batch_size;
  for (const auto& c : changes)
    if (c.key == "data.batch_size" && !c.before.empty()) batch_before = std::stoll(c.before);
  const int64_t global = batch_before * world_before;
  if (global == cfg.batch_size * world_after) return;
  throw Error(fmt::format("--resume from {}: written by {} process(es) with data.batch_size {} (a global batch of "
                          "{}), resumed with {} and data.batch_size {} ({}): keep the global batch, e.g. "
                          "data.batch_size={}", checkpoint, world_before, batch_before, global, world_after,
                          cfg.batch_size, cfg.batch_size * world_after,
                          global % world_after == 0
                              ? std::to_string(global / world_after)
                              : std::string("(none: the global batch does not divide by the world size)")));
}

// Whether a changed key may change on resume (see check_resume_changes). `resharded`: another world size.
bool resume_may_change(const TrainConfig& cfg, const TrainConfig::Change& c, bool resharded) {
  // With slm.handoff, when and on what the evaluation runs decides the switch: the data.eval keys then count.
  const bool decides_handoff = cfg.handoff != Handoff::None && c.key.rfind("data.eval", 0) == 0;
  const bool reshard = c.key == "data.batch_size" && resharded;  // the global batch is kept
  // The sharded levels hold the same state, split differently: a checkpoint of one resumes under another.
  const bool sharded_level = c.key == "train.sharding" && !c.before.empty() && c.before != "none" && c.after != "none";
  return reshard || sharded_level || (TrainConfig::resume_safe(c.key) && !decides_handoff) ||
         std::find(cfg.resume_allow.begin(), cfg.resume_allow.end(), c.key) != cfg.resume_allow.end();
}

// A key added to the config since the checkpoint was written, at its default: the same run.
bool added_at_default(const TrainConfig::Change& c) {
  static const auto default_values = TrainConfig().differences("{}");  // every key's default, as (key, "", value)
  return c.before.empty() && std::any_of(default_values.begin(), default_values.end(), [&](const auto& d) {
           return d.key == c.key && d.after == c.after;
         });
}

// A resumed run must be the run it continues: a changed key that affects the steps is refused (naming it, with
// both values) unless train.resume_allow (rho_pretrain --allow-change) names it; keys that never affect the steps
// may change. Accepted changes are appended to out_dir/config_changes.jsonl (by the main rank: write_history), so
// the run's history stays readable.
void check_resume_changes(const TrainConfig& cfg, const CheckpointState& written, const std::string& checkpoint,
                          int64_t world_size, bool write_history) {
  const auto changes = cfg.differences(written.config_yaml);
  check_global_batch_kept(cfg, changes, checkpoint, written.world_size, world_size);
  std::vector<std::string> refused;
  nlohmann::json accepted = nlohmann::json::array();
  for (const auto& c : changes) {
    if (added_at_default(c)) continue;
    if (resume_may_change(cfg, c, written.world_size != world_size))
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
        << nlohmann::json({{"resumed_at_step", written.step}, {"changes", accepted}}).dump() << "\n";
  }
}

int64_t step_of_checkpoint(const std::string& dir) {
  return std::stoll(fs::path(dir).filename().string().substr(std::string("step-").size()));
}

// A histogram step's scores, this rank's: {every finite score, those of kept tokens (weight > 0)}, as flat fp32.
using ScoreValues = std::array<at::Tensor, 2>;
ScoreValues finite_scores(const std::vector<at::Tensor>& scores, const std::vector<at::Tensor>& weights) {
  std::vector<at::Tensor> all, kept;
  for (size_t i = 0; i < scores.size(); ++i) {
    const auto sc = scores[i].reshape(-1).to(at::kFloat);
    const auto finite = at::isfinite(sc);
    all.push_back(sc.masked_select(finite));
    kept.push_back(sc.masked_select(finite & (weights[i].reshape(-1).to(at::kFloat) > 0)));
  }
  return {at::cat(all), at::cat(kept)};
}

// The least and greatest of each of the two over every rank (lo = +inf: no value anywhere). Rank r fills its own
// slots of a sum (NaN: none), then the slots are read over the ranks.
struct ScoreRanges {
  double lo[2], hi[2];
};
ScoreRanges global_score_ranges(const DistContext& dist, const ScoreValues& values) {
  const auto W = dist.world_size();
  const auto f64 = at::TensorOptions().dtype(at::kDouble).device(values[0].device());
  auto ranges = at::zeros({W, 2, 2}, f64);
  for (int64_t which = 0; which < 2; ++which) {
    const auto& v = values[which];
    ranges[dist.rank()][which][0] = v.numel() ? v.min().to(at::kDouble) : at::scalar_tensor(NAN, f64);
    ranges[dist.rank()][which][1] = v.numel() ? v.max().to(at::kDouble) : at::scalar_tensor(NAN, f64);
  }
  dist.allreduce_sum(ranges);
  const auto r = ranges.to(at::kCPU);
  ScoreRanges out;
  for (int64_t which = 0; which < 2; ++which) {
    out.lo[which] = std::numeric_limits<double>::infinity();
    out.hi[which] = -out.lo[which];
    for (int64_t k = 0; k < W; ++k) {
      const double a = r[k][which][0].item<double>(), b = r[k][which][1].item<double>();
      if (std::isnan(a)) continue;
      out.lo[which] = std::min(out.lo[which], a);
      out.hi[which] = std::max(out.hi[which], b);
    }
  }
  return out;
}

// For each of the two, summed over the ranks, on the host: `buckets` counts over [lo, top], then the count, the
// sum and the sum of squares ([2, buckets + 3], fp64).
at::Tensor global_score_histograms(const DistContext& dist, const ScoreValues& values, int64_t buckets, double lo,
                                   double top) {
  const auto f64 = at::TensorOptions().dtype(at::kDouble).device(values[0].device());
  std::vector<at::Tensor> rows;
  for (const auto& v : values) {
    const auto d = v.to(at::kDouble);
    rows.push_back(at::cat({at::histc(v, buckets, lo, top).to(at::kDouble),
                            at::stack({at::scalar_tensor(static_cast<double>(v.numel()), f64), d.sum(), (d * d).sum()})}));
  }
  auto sums = at::stack(rows);
  dist.allreduce_sum(sums);
  return sums.to(at::kCPU);
}

// A step's figures over the global batch. What each rank adds up travels as one tensor through one all-reduce
// (pack_sums); then the reduced sums and the step's global figures come to the host in one copy (read).
struct StepTotals {
  double loss = 0;      // the objective: sum over micro-batches of (kept losses / the step's denominator)
  double loss_all = 0;  // the loss summed over every valid token
  SelectionStats selection;
  double valid = 0, grad_norm = 0;
  bool found_inf = false;  // a non-finite loss or gradient norm: the step changed nothing

  static at::Tensor pack_sums(const at::Tensor& loss, const at::Tensor& loss_all, const SelectionTally& tally) {
    const auto zeros = at::zeros({SelectionTally::kFields}, loss.options());
    return at::cat({at::stack({loss, loss_all}), tally.sums().defined() ? tally.sums() : zeros});
  }
  static StepTotals read(const at::Tensor& sums, const at::Tensor& valid, const at::Tensor& grad_norm,
                         const at::Tensor& found_inf) {
    const auto host = at::cat({sums, at::stack({valid.to(at::kDouble), grad_norm.to(at::kDouble),
                                                found_inf.to(at::kDouble)})})
                          .to(at::kCPU);
    const double* h = host.data_ptr<double>();
    const double* rest = h + 2 + SelectionTally::kFields;
    StepTotals t;
    t.loss = h[0];
    t.loss_all = h[1];
    t.selection = SelectionTally::stats_of(h + 2);
    t.valid = rest[0];
    t.grad_norm = rest[1];
    t.found_inf = rest[2] != 0;
    return t;
  }
};

}  // namespace

struct Trainer::State {
  TrainConfig cfg;
  std::shared_ptr<DistContext> dist;
  at::Device device{at::kCPU};
  bool autocast = false;
  Llama model{nullptr};
  std::unique_ptr<ReferenceSource> reference;  // SLM's reference losses (librho/slm/reference.h)
  std::unique_ptr<ReferenceSource> eval_reference;     // slm.eval_reference: the reference's loss on the eval sets
  std::map<std::string, std::unique_ptr<LossDataset>> eval_reference_offline;  // slm.eval_reference_losses
  std::map<std::string, double> eval_reference_loss;  // per eval set, once (unless the reference moves)
  bool warned_caught_up = false, warned_kept_score = false;
  int64_t handoff_step = -1;                          // slm.handoff took over after this step (-1: not yet)
  std::unique_ptr<ReferenceSource> handoff_reference;  // slm.handoff self: the moving average selected against
  std::shared_ptr<TokenDataset> train;
  std::unique_ptr<BatchLoader> loader;
  std::vector<std::pair<std::string, std::shared_ptr<TokenDataset>>> evals;
  // train.sharding none: AdamW over the whole model, gradients all-reduced in buckets. Otherwise ShardedModel
  // owns the gradient reduction, the optimizer state and (level parameters) the weights.
  std::unique_ptr<AdamW> optim;
  std::unique_ptr<GradBucketReducer> reducer;
  std::unique_ptr<ShardedModel> sharded;
  ExcessLossSelector selector{SLMOptions{}};
  int64_t step = 0, tokens_seen = 0, skipped_steps = 0;
  int64_t eos_id = -1;
  std::ofstream log;
  std::unique_ptr<TensorBoardLog> tensorboard;  // train.tensorboard: the log's lines as events (rank 0)
  std::vector<at::Tensor> step_scores, step_weights;  // a histogram step's selection, per micro-batch
  ShardedMemory resident;  // the first step's largest weights / gradients / optimizer bytes after a backward
  ShardedMemory before_first_step;  // what the first step started with
  int64_t first_step_peak = 0;      // the most bytes the first step allocated at once above that (PeakMemory)

  // Bytes of weights, gradients and optimizer state this rank holds now.
  ShardedMemory memory_now() const {
    if (sharded) return sharded->memory();
    ShardedMemory m;
    for (const auto& p : model->parameters()) {
      m.weights += static_cast<int64_t>(p.nbytes());
      if (p.grad().defined()) m.gradients += static_cast<int64_t>(p.grad().nbytes());
    }
    for (const auto& [name, t] : optim->state()) m.optimizer += static_cast<int64_t>(t.nbytes());
    m.buffers = reducer->buffer_bytes();
    return m;
  }
  void log_memory();

  // A host tensor on the training device: from pinned memory without blocking the host (pageable memory would
  // make the copy wait for the device's queue to drain).
  at::Tensor to_device(const at::Tensor& t) const { return to_device_async(t, device); }

  // One micro-batch on the device: its tokens copied once; inputs and targets are views of them.
  struct DeviceBatch {
    at::Tensor tokens, valid, ref;
    at::Tensor inputs() const { return tokens.narrow(1, 0, tokens.size(1) - 1); }
    at::Tensor targets() const { return tokens.narrow(1, 1, tokens.size(1) - 1); }
  };

  // Mean token loss over an eval set's windows; losses(batch, target positions [batch, seq]) -> [batch, seq].
  double eval_mean(const TokenDataset& data, const std::function<at::Tensor(const DeviceBatch&, const at::Tensor&)>& losses,
                   bool collective = false);

  DeviceBatch load(const Batch& b, bool with_reference) {
    DeviceBatch d;
    d.tokens = to_device(b.tokens);
    const auto inputs = d.inputs();
    // A target right after EOS is the next document's first token, predicted across the boundary.
    d.valid = valid_targets(inputs, eos_id, cfg.exclude_boundary);
    if (with_reference) d.ref = (handoff_reference ? *handoff_reference : *reference).losses(b, d.tokens);
    return d;
  }

  // Set-up, in the constructor's order, and the parts of a step (defined below).
  SLMStep plan_step(const std::vector<DeviceBatch>& batches, bool slm, double ratio) const;
  std::pair<bool, double> selection_now() const;
  void start_self_handoff();
  at::Tensor forward_backward(const std::vector<DeviceBatch>& batches, SLMStep& plan);
  std::pair<at::Tensor, at::Tensor> update(const at::Tensor& loss_sum, double lr);
  void init_device(std::shared_ptr<DistContext> group);
  void init_model();
  void init_data();
  void init_slm();
  void init_optimizer();
  void resume_from_checkpoint();
  std::string agreed_latest_checkpoint() const;
  void check_resumable(const Checkpoint& ck, const std::string& dir) const;
  void restore_weights_and_state(const Checkpoint& ck, const std::string& dir);
  void reread_warnings();
  void truncate_log_after(int64_t last) const;

  at::Tensor forward_loss(const DeviceBatch& b) {
    AutocastScope ac(device.type(), at::kBFloat16, autocast);
    return model->token_loss(b.inputs(), b.targets()).to(at::kFloat);
  }

  // A warning, the first time only: on stderr and as a log line {"type": "warning", "step", "kind", "message"}
  // (a resumed run reads the kinds already said back from the log).
  void warn_once(bool& warned, const char* kind, const std::string& message) {
    if (warned) return;
    warned = true;
    write_log({{"type", "warning"}, {"step", step}, {"kind", kind}, {"message", message}});
    if (dist->is_main()) std::cerr << "\nrho_pretrain: warning: " << message << "\n";
  }

  // A log line, stamped with the time (seconds since the epoch), to log.jsonl and TensorBoard.
  void write_log(nlohmann::json j) {
    if (!dist->is_main()) return;
    j["time"] = std::round(std::chrono::duration<double>(
                               std::chrono::system_clock::now().time_since_epoch()).count() * 1000) / 1000;
    const auto line = j.dump();
    log << line << "\n";
    log.flush();
    if (tensorboard) tensorboard->write(line);
  }

  void log_score_histograms();
  void log_train_step(const StepMetrics& m, double tokens_per_s);
  void check_caught_up(const std::string& set, double loss, double reference_loss);

  // Gradients are dropped, not zeroed: the next backward then writes them instead of adding to zeros.
  void zero_grads() {
    for (auto& p : model->parameters()) p.mutable_grad() = at::Tensor();
  }
};

// The trainer's parts, set up in order by the constructor.
void Trainer::State::init_device(std::shared_ptr<DistContext> group) {
  device = resolve_device(cfg.device, "run.device");
  dist = group ? std::move(group) : std::make_shared<DistContext>(device);
  if (dist->distributed()) {
    if (dist->device().is_cuda() != device.is_cuda())
      throw Error(fmt::format("run.device resolves to {} but the process group runs on {} ({})", device.str(),
                              dist->device().str(), enum_name(kBackendNames, dist->backend())));
    device = dist->device();
  }
  // bf16 autocast: by default on CUDA; on the CPU when asked (slow, but the same recipe as on the GPU).
  autocast = cfg.precision == Precision::Bf16 || (cfg.precision == Precision::Auto && device.is_cuda());
}

// Model: from a Hugging Face directory, or freshly initialised from the seed.
void Trainer::State::init_model() {
  if (!cfg.init_from.empty()) {
    model = load_hf_model(cfg.init_from);
    cfg.model = model->config;
  } else {
    model = Llama(cfg.model);
    model->reset_parameters(cfg.seed);
  }
  model->activation_checkpointing = cfg.activation_checkpointing;
  model->to(device);
}

void Trainer::State::init_data() {
  train = std::make_shared<TokenDataset>(TokenDataset::open(cfg.train_data));
  eos_id = train->manifest().eos_id;
  if (train->manifest().vocab_size > cfg.model.vocab_size)
    throw Error(fmt::format("{}: tokenizer vocabulary {} exceeds the model's vocab_size {}", cfg.train_data,
                            train->manifest().vocab_size, cfg.model.vocab_size));
  LoaderOptions lo;
  lo.seq_len = cfg.seq_len;
  lo.batch_size = cfg.batch_size;
  lo.seed = cfg.seed;
  lo.rank = dist->rank();
  lo.world_size = dist->world_size();
  lo.pin_memory = device.is_cuda();
  loader = std::make_unique<BatchLoader>(train, lo);
  for (const auto& e : cfg.eval_sets) evals.emplace_back(e.name, std::make_shared<TokenDataset>(TokenDataset::open(e.path)));
  for (const auto& spec : cfg.eval_reference_losses) {  // NAME=DIR, checked by the config
    const std::string name = spec.substr(0, spec.find('=')), dir = spec.substr(spec.find('=') + 1);
    auto losses = std::make_unique<LossDataset>(LossDataset::open(dir));
    for (const auto& [n, data] : evals)
      if (n == name) losses->check_matches(*data);
    if (losses->manifest().seq_len != cfg.seq_len || losses->manifest().stride != cfg.seq_len)
      throw Error(fmt::format("{}: scored with seq_len {} and stride {}, but the evaluation windows are data.seq_len "
                              "{} with stride {} (slm.eval_reference_losses {})", dir, losses->manifest().seq_len,
                              losses->manifest().stride, cfg.seq_len, cfg.seq_len, name));
    eval_reference_offline[name] = std::move(losses);
  }
}

void Trainer::State::init_slm() {
  if (!cfg.eval_reference.empty()) {  // any stage: a CLM run is compared with the reference too
    ReferenceOptions eo;
    eo.model_dirs = cfg.eval_reference;
    eo.combine = cfg.reference_combine;
    eval_reference = std::make_unique<ReferenceSource>(eo, *train, *model, device, autocast);
  }
  if (cfg.stage != Stage::Slm) return;
  selector = ExcessLossSelector(cfg.slm);
  ReferenceOptions ro;
  ro.loss_dirs = cfg.reference_losses;
  ro.model_dirs = cfg.reference_model;
  ro.self = cfg.self_reference;
  ro.ema_decay = cfg.ema_decay;
  ro.combine = cfg.reference_combine;
  reference = std::make_unique<ReferenceSource>(ro, *train, *model, device, autocast);
}

// AdamW (no weight decay on norms and embeddings unless asked) with gradient buckets, or the sharded model.
void Trainer::State::init_optimizer() {
  if (cfg.sharding != Sharding::None) {
    const ShardedAdamWOptions adam{cfg.beta1, cfg.beta2, cfg.eps, cfg.weight_decay, cfg.decay_norms_and_embeddings};
    sharded = std::make_unique<ShardedModel>(model, *dist, cfg.sharding, autocast ? at::kBFloat16 : at::kFloat, adam);
    return;
  }
  std::vector<std::pair<std::string, at::Tensor>> named;
  for (auto& item : model->named_parameters()) named.emplace_back(item.key(), item.value());
  optim = std::make_unique<AdamW>(adamw_groups(named, cfg.weight_decay, cfg.decay_norms_and_embeddings), cfg.beta1,
                                  cfg.beta2, cfg.eps);
  reducer = std::make_unique<GradBucketReducer>(model->parameters(), *dist, cfg.bucket_mb);
}

// The newest checkpoint as rank 0 sees it (every rank resumes from the same one).
std::string Trainer::State::agreed_latest_checkpoint() const {
  const auto latest = latest_checkpoint(cfg.out_dir);
  auto latest_step = at::full({1}, latest ? step_of_checkpoint(*latest) : int64_t(-1), at::kLong);
  dist->broadcast(latest_step, 0);
  if (latest_step.item<int64_t>() < 0) throw Error(fmt::format("{}: --resume but no checkpoint was found", cfg.out_dir));
  return checkpoint_dir(cfg.out_dir, latest_step.item<int64_t>());
}

// What may change between the run that wrote `ck` and this one: sharding levels and world sizes, config keys.
void Trainer::State::check_resumable(const Checkpoint& ck, const std::string& dir) const {
  const bool ck_sharded = ck.sharding.level != Sharding::None;
  if (ck_sharded != (sharded != nullptr))
    throw Error(fmt::format("{}: written with train.sharding {}, resumed with {}: a sharded checkpoint resumes under any "
                            "sharded level (optimizer, gradients, parameters), an unsharded one under none",
                            dir, enum_name(kShardingNames, ck.sharding.level), enum_name(kShardingNames, cfg.sharding)));
  if (ck.state.world_size != dist->world_size() && !ck_sharded)
    throw Error(fmt::format("{}: written by {} process(es), resumed with {}: an unsharded checkpoint resumes at the "
                            "world size that wrote it, so resume with {} (sharded checkpoints, train.sharding, reshard to "
                            "any world size)", dir, ck.state.world_size, dist->world_size(), ck.state.world_size));
  check_resume_changes(cfg, ck.state, dir, dist->world_size(), dist->is_main());
  if (!sharded) return;
  const auto& mine = sharded->layout();
  const auto& theirs = ck.sharding.units;
  for (size_t u = 0; u < std::max(mine.size(), theirs.size()); ++u)
    if (u >= mine.size() || u >= theirs.size() || mine[u].name != theirs[u].name || mine[u].numel != theirs[u].numel)
      throw Error(fmt::format("{}/state.json: sharding.units differ from this model's at unit {}", dir, u));
}

// Weights and AdamW's state (resharded to this world size when sharded), the references, the CPU generator.
void Trainer::State::restore_weights_and_state(const Checkpoint& ck, const std::string& dir) {
  if (sharded) {
    sharded->load_shard_state(ck.sharding.world_size, [&](int64_t q) { return read_checkpoint_shard(dir, ck, q); },
                              dir);
  } else {
    load_model_weights(*model, ck, dir);
    optim->load_state(ck.optimizer, dir);
  }
  if (reference) reference->load_state({ck.reference.begin(), ck.reference.end()}, dir);
  handoff_step = ck.state.handoff_step;
  if (handoff_step >= 0 && cfg.handoff == Handoff::Self) {  // (its construction draws from the CPU generator)
    start_self_handoff();
    std::map<std::string, at::Tensor> own;
    for (const auto& [name, t] : ck.reference)
      if (name.rfind("handoff.", 0) == 0) own[name.substr(8)] = t;
    handoff_reference->load_state(own, dir);
  }
  if (ck.rng_cpu.defined()) {  // last: as the interrupted run's generator stood
    auto gen = at::detail::getDefaultCPUGenerator();
    gen.set_state(ck.rng_cpu);
  }
}

// Warnings the run gave up to the checkpoint are not given again.
void Trainer::State::reread_warnings() {
  std::ifstream in(fs::path(cfg.out_dir) / "log.jsonl");
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_object() || j.value("type", "") != "warning") continue;
    warned_caught_up = warned_caught_up || j.value("kind", "") == "caught_up";
    warned_kept_score = warned_kept_score || j.value("kind", "") == "kept_score";
  }
}

// Every rank resumes from rank 0's newest checkpoint (out_dir is on a shared file system): weights, optimizer,
// RNG, reference state and loader position, so the run continues exactly.
void Trainer::State::resume_from_checkpoint() {
  const auto dir = agreed_latest_checkpoint();
  const auto ck = load_checkpoint(dir);
  check_resumable(ck, dir);
  restore_weights_and_state(ck, dir);
  step = ck.state.step;
  tokens_seen = ck.state.tokens_seen;
  loader->seek(ck.state.loader_step);
  if (dist->is_main()) {
    truncate_log_after(step);
    reread_warnings();
    std::cerr << fmt::format("resumed from {} (step {})\n", dir, step);
  }
}

// Drops log lines of steps after `last` (an interrupted run's), so the log reads as one run.
void Trainer::State::truncate_log_after(int64_t last) const {
  const auto path = (fs::path(cfg.out_dir) / "log.jsonl").string();
  if (!fs::exists(path)) return;
  std::ifstream in(path);
  std::string line, kept;
  while (std::getline(in, line)) {
    try {
      if (nlohmann::json::parse(line).value("step", int64_t(0)) <= last) kept += line + "\n";
    } catch (const nlohmann::json::exception&) {  // a torn last line from the kill
    }
  }
  write_file_atomic(path, kept);
}

Trainer::Trainer(TrainConfig config, bool resume, std::shared_ptr<DistContext> dist) : s_(std::make_unique<State>()) {
  auto& s = *s_;
  s.cfg = std::move(config);
  s.init_device(std::move(dist));
  s.init_model();
  s.init_data();
  s.init_slm();
  s.init_optimizer();
  const auto& cfg = s.cfg;
  const bool main = s.dist->is_main();
  if (main) fs::create_directories(cfg.out_dir);
  const auto log_path = (fs::path(cfg.out_dir) / "log.jsonl").string();
  if (resume)
    s.resume_from_checkpoint();
  else if (latest_checkpoint(cfg.out_dir))
    throw Error(fmt::format("{}: already holds checkpoints; pass --resume to continue or choose another out_dir",
                            cfg.out_dir));
  else if (main)
    write_file_atomic(log_path, std::string());
  if (main) {
    write_file_atomic((fs::path(cfg.out_dir) / "config.yaml").string(), cfg.to_yaml());
    s.log.open(log_path, std::ios::app);
    // A resumed run's event file is rebuilt from its (truncated) log: each step appears once.
    if (cfg.tensorboard) s.tensorboard = std::make_unique<TensorBoardLog>(cfg.out_dir, resume ? log_path : "");
  }
}

Trainer::~Trainer() = default;
Llama& Trainer::model() { return s_->model; }
int64_t Trainer::step() const { return s_->step; }
const TrainConfig& Trainer::config() const { return s_->cfg; }

// The step's selection and loss denominator (librho/slm/slm_loss.h: the same API research code uses).
// slm.handoff self: from now on, SLM selects against a moving average of the model, starting from its weights.
void Trainer::State::start_self_handoff() {
  ReferenceOptions ro;
  ro.self = SelfReference::Ema;
  ro.ema_decay = cfg.ema_decay;
  handoff_reference = std::make_unique<ReferenceSource>(ro, *train, *model, device, autocast);
}

// Whether this step selects, and its ratio (< 0: the schedule's): warm start and slm.handoff decide.
std::pair<bool, double> Trainer::State::selection_now() const {
  if (cfg.stage != Stage::Slm || step < cfg.slm_start_step) return {false, -1};
  if (handoff_step < 0 || step < handoff_step) return {true, -1};
  if (cfg.handoff == Handoff::Clm) return {false, -1};
  if (cfg.handoff == Handoff::Anneal) {
    const double base = cfg.slm.ratio_at(step);
    const double progress = std::min(1.0, static_cast<double>(step - handoff_step) / static_cast<double>(cfg.handoff_steps));
    return {true, base + (1.0 - base) * progress};
  }
  return {true, -1};  // self: the reference changed, the ratio did not
}

SLMStep Trainer::State::plan_step(const std::vector<DeviceBatch>& batches, bool slm, double ratio) const {
  if (!slm) {
    std::vector<at::Tensor> valid;
    for (const auto& b : batches) valid.push_back(b.valid);
    return SLMStep::causal(std::move(valid), dist.get());
  }
  std::vector<MicroBatchTargets> targets;
  for (const auto& b : batches) targets.push_back({b.valid, b.ref});
  return SLMStep(selector, step, std::move(targets), dist.get(), ratio);
}

// Forward and backward of every micro-batch; returns the step's sums over every rank, on the device
// (StepTotals::pack_sums).
at::Tensor Trainer::State::forward_backward(const std::vector<DeviceBatch>& batches, SLMStep& plan) {
  const auto n = static_cast<int64_t>(batches.size());
  // Scopes step and global select over every micro-batch before any backward: a no-grad forward scores each.
  if (plan.needs_scores())
    for (int64_t i = 0; i < n; ++i) {
      at::NoGradGuard no_grad;
      plan.score(i, forward_loss(batches[i]));
    }
  const auto on_device = at::TensorOptions().dtype(at::kDouble).device(device);
  auto loss_sum = at::zeros({}, on_device), loss_all_sum = at::zeros({}, on_device);
  const bool histogram = cfg.histogram_every > 0 && (step + 1) % cfg.histogram_every == 0;
  step_scores.clear();
  step_weights.clear();
  for (int64_t i = 0; i < n; ++i) {
    auto token_loss = forward_loss(batches[i]);
    auto out = plan.loss(i, token_loss);
    if (histogram && out.scores.defined()) {
      step_scores.push_back(out.scores.detach());
      step_weights.push_back(out.weights.detach());
    }
    auto& loss = out.loss;
    // The last backward all-reduces (or reduce-scatters) gradients as they become ready.
    if (sharded)
      sharded->before_backward(i == n - 1);
    else if (i == n - 1)
      reducer->arm();
    loss.backward();
    if (sharded) sharded->after_backward();
    if (step == 0) {
      const auto m = memory_now();
      resident.weights = std::max(resident.weights, m.weights);
      resident.gradients = std::max(resident.gradients, m.gradients);
      resident.optimizer = std::max(resident.optimizer, m.optimizer);
    }
    loss_sum += loss.detach().to(at::kDouble);
    loss_all_sum += (token_loss.detach() * batches[i].valid.to(at::kFloat)).sum().to(at::kDouble);
  }
  if (reducer) reducer->finish();
  auto sums = StepTotals::pack_sums(loss_sum, loss_all_sum, plan.tally());
  dist->allreduce_sum(sums);
  return sums;
}

// Gradient norm (and clipping), AdamW (sharded: on this rank's shards, then the weights shared), EMA. A non-finite loss or norm leaves the weights as they
// were (the optimizer reads found_inf on the device). Gradients and the loss are global here, so every rank takes
// the same decision. Returns {gradient norm, found_inf}, on the device.
std::pair<at::Tensor, at::Tensor> Trainer::State::update(const at::Tensor& loss_sum, double lr) {
  const double max_norm = cfg.grad_clip > 0 ? cfg.grad_clip : std::numeric_limits<double>::infinity();
  const auto norm = sharded ? sharded->clip_grad_norm(max_norm) : clip_grad_norm(model->parameters(), max_norm);
  const auto found_inf = (~at::isfinite(loss_sum) | ~at::isfinite(norm)).to(at::kFloat);
  if (sharded)
    sharded->step(lr, found_inf);
  else
    optim->step(lr, found_inf);
  if (reference) reference->after_step(*model, found_inf);
  if (handoff_reference) handoff_reference->after_step(*model, found_inf);
  zero_grads();
  return {norm, found_inf};
}

StepMetrics Trainer::train_step() {
  auto& s = *s_;
  const auto& cfg = s.cfg;
  const auto& dist = *s.dist;
  const auto [slm, ratio] = s.selection_now();  // before start_step, or after a handoff to clm: plain CLM
  // Every micro-batch of the step goes to the device first (its copies are queued, the host does not wait).
  std::vector<State::DeviceBatch> batches;
  for (int64_t i = 0; i < cfg.grad_accum; ++i) batches.push_back(s.load(s.loader->next(), slm));

  // From here on nothing is read back by the host until the step's metrics, once, at the end.
  StepMetrics m;
  m.lr = cfg.lr_at(s.step);
  std::optional<PeakMemory> peak;  // the first step's allocations, for the memory log line
  if (s.step == 0) {
    s.before_first_step = s.memory_now();
    if (s.sharded) s.sharded->reset_gather_stats();
    peak.emplace(s.device);
  }
  SLMStep plan = s.plan_step(batches, slm, ratio);
  const auto sums = s.forward_backward(batches, plan);
  const auto [norm, found_inf] = s.update(sums[0], m.lr);
  if (peak) s.first_step_peak = peak->peak();

  // The step's one read from the device.
  const auto t = StepTotals::read(sums, plan.global_valid(), norm, found_inf);
  m.loss = t.loss;
  m.loss_all = t.loss_all / std::max(t.valid, 1.0);
  m.grad_norm = t.grad_norm;
  for (const auto& b : batches) m.tokens += b.valid.numel() * dist.world_size();
  if (slm) {
    m.selected_fraction = t.selection.effective_fraction();
    m.kept_score = t.selection.kept_score_mean();
    m.dropped_score = t.selection.dropped_score_mean();
  }
  if (t.found_inf) {
    if (cfg.nan_policy == NanPolicy::Stop) {
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
  if (!s.step_scores.empty()) s.log_score_histograms();
  if (s.step == 1) s.log_memory();
  return m;
}

// After the first step, one log line {"type": "memory", "sharding", "ranks": [{"weights", "gradients",
// "optimizer", "peak", and under sharding parameters "gathers": {"issued", "prefetched", "wait_seconds"}}, ...]}:
// the bytes each rank held after a backward (the optimizer state as it stands after the step), and the step's
// peak: what it started with plus the most it allocated at once (PeakMemory), for rho_model plan's check and the
// sharding tests. Collective.
void Trainer::State::log_memory() {
  resident.optimizer = std::max(resident.optimizer, memory_now().optimizer);
  const int64_t W = dist->world_size();
  const auto& b = before_first_step;
  const GatherStats g = sharded ? sharded->gather_stats() : GatherStats{};
  const int64_t values[] = {resident.weights, resident.gradients, resident.optimizer,
                            b.weights + b.gradients + b.optimizer + b.buffers + first_step_peak,
                            g.issued, g.prefetched, std::llround(g.wait_seconds * 1e6)};
  constexpr int64_t kValues = 7;
  auto t = at::zeros({W, kValues}, at::kLong);
  for (int64_t k = 0; k < kValues; ++k) t[dist->rank()][k] = values[k];
  dist->allreduce_sum(t);
  nlohmann::json ranks = nlohmann::json::array();
  for (int64_t r = 0; r < W; ++r) {
    nlohmann::json rank = {{"weights", t[r][0].item<int64_t>()}, {"gradients", t[r][1].item<int64_t>()},
                           {"optimizer", t[r][2].item<int64_t>()}, {"peak", t[r][3].item<int64_t>()}};
    if (cfg.sharding == Sharding::Parameters)  // the step's layer gathers (GatherStats)
      rank["gathers"] = {{"issued", t[r][4].item<int64_t>()}, {"prefetched", t[r][5].item<int64_t>()},
                         {"wait_seconds", t[r][6].item<int64_t>() * 1e-6}};
    ranks.push_back(rank);
  }
  // What rho_model plan says of the same step (docs/scaling.md), beside what it measured.
  MemoryPlanOptions po;
  po.world_size = W;
  po.seq_len = cfg.seq_len;
  po.micro_batch = cfg.batch_size;
  po.grad_accum = cfg.grad_accum;
  po.sharding = cfg.sharding;
  po.bf16 = autocast;
  po.cuda = device.is_cuda();
  po.activation_checkpointing = cfg.activation_checkpointing;
  po.gloo = dist->backend() == Backend::Gloo;
  po.group_of_one = W == 1 && dist->distributed();
  write_log({{"type", "memory"}, {"step", step}, {"sharding", enum_name(kShardingNames, cfg.sharding)}, {"ranks", ranks},
             {"planned", plan_memory(model->config, po).total()}});
}

// The step's scores as two histograms over every rank's tokens: slm/score (every valid token with a finite score)
// and slm/score_kept (those with a weight > 0), on the same buckets. Collective; rank 0 logs them.
void Trainer::State::log_score_histograms() {
  constexpr int64_t kBuckets = 30;
  const auto values = finite_scores(step_scores, step_weights);
  step_scores.clear();
  step_weights.clear();
  const auto range = global_score_ranges(*dist, values);
  if (!std::isfinite(range.lo[0])) return;  // no finite score on any rank
  const double lo = range.lo[0], top = range.hi[0] > lo ? range.hi[0] : lo + 1e-6;
  const auto h = global_score_histograms(*dist, values, kBuckets, lo, top);
  std::vector<double> limits;
  for (int64_t b = 1; b <= kBuckets; ++b) limits.push_back(lo + (top - lo) * static_cast<double>(b) / kBuckets);
  for (int64_t which = 0; which < 2; ++which) {
    const double num = h[which][kBuckets].item<double>();
    if (num == 0) continue;
    std::vector<double> counts;
    for (int64_t b = 0; b < kBuckets; ++b) counts.push_back(h[which][b].item<double>());
    write_log({{"type", "histogram"}, {"step", step}, {"tokens", tokens_seen},
               {"tag", which == 0 ? "slm/score" : "slm/score_kept"}, {"min", range.lo[which]},
               {"max", range.hi[which]}, {"num", num}, {"sum", h[which][kBuckets + 1].item<double>()},
               {"sum_squares", h[which][kBuckets + 2].item<double>()}, {"limits", limits}, {"counts", counts}});
  }
}

// A logged step's line (and the caught-up warning that its kept tokens' mean excess loss may give).
void Trainer::State::log_train_step(const StepMetrics& m, double tokens_per_s) {
  nlohmann::json j = {{"type", "train"}, {"step", m.step}, {"tokens", tokens_seen}, {"loss", m.loss},
                      {"loss_all", m.loss_all}, {"lr", m.lr}, {"grad_norm", m.grad_norm},
                      {"tokens_per_s", tokens_per_s}, {"selected_fraction", m.selected_fraction}};
  if (cfg.stage == Stage::Slm) {
    if (std::isfinite(m.kept_score) && m.kept_score <= 0 && step > cfg.slm_start_step &&
        cfg.self_reference == SelfReference::None && cfg.slm.rule == SelectionRule::Excess && handoff_step < 0)
      warn_once(warned_kept_score, "kept_score", fmt::format(
          "the kept tokens' mean excess loss is {:.4f} <= 0 at step {}: the model has caught up with its reference; "
          "SLM is now selecting against a weaker model", m.kept_score, m.step));
    j["kept_score"] = std::isfinite(m.kept_score) ? nlohmann::json(m.kept_score) : nlohmann::json();
    j["dropped_score"] = std::isfinite(m.dropped_score) ? nlohmann::json(m.dropped_score) : nlohmann::json();
  }
  if (m.skipped) j["skipped"] = true;
  write_log(j);
}

// The first eval set is the target: within the margin of the reference, SLM selects against a weaker model, which
// is warned about once and, with slm.handoff, hands selection over (every rank sees the same reduced losses). A
// self-reference starts equal to the model: there is nothing to catch up with.
void Trainer::State::check_caught_up(const std::string& set, double loss, double reference_loss) {
  const bool external = eval_reference || cfg.self_reference == SelfReference::None;
  if (!external || set != cfg.eval_sets.front().name || cfg.stage != Stage::Slm ||
      !(loss - reference_loss <= cfg.catchup_margin))  // (a NaN loss has not caught up)
    return;
  warn_once(warned_caught_up, "caught_up", fmt::format(
      "the model has caught up with its reference on '{}' (loss {:.4f}, reference {:.4f}, margin {}): SLM "
      "is now selecting against a weaker model", set, loss, reference_loss, cfg.catchup_margin));
  if (cfg.handoff == Handoff::None || handoff_step >= 0) return;
  handoff_step = step;
  if (cfg.handoff == Handoff::Self) start_self_handoff();
  write_log({{"type", "handoff"}, {"step", step}, {"policy", enum_name(kHandoffNames, cfg.handoff)},
             {"gap", loss - reference_loss}});
  if (dist->is_main())
    std::cerr << fmt::format("\n  slm.handoff {} from step {}\n", enum_name(kHandoffNames, cfg.handoff), step + 1);
}

// Mean token loss over an eval set's first eval_batches * batch_size windows (the same tokens every time; rank r
// takes every world-th batch), with `losses(device_batch)` giving [batch, seq] losses. `collective`: losses() runs
// collectives (the training model under sharding parameters gathers each layer), so every rank must call it equally
// often: a rank whose share ends first runs stand-in batches that count for nothing.
double Trainer::State::eval_mean(const TokenDataset& data,
                                 const std::function<at::Tensor(const DeviceBatch&, const at::Tensor&)>& losses,
                                 bool collective) {
  const int64_t T = cfg.seq_len, windows = (data.num_tokens() - 1) / T;
  const int64_t n = std::min(windows, cfg.eval_batches * cfg.batch_size);
  if (n == 0) throw Error(fmt::format("{}: fewer than seq_len+1 tokens to evaluate on", data.dir()));
  double sum = 0;
  int64_t count = 0;
  const int64_t stride = cfg.batch_size * dist->world_size();
  const int64_t rounds = (n + stride - 1) / stride;
  for (int64_t k = 0; k < rounds; ++k) {
    int64_t w0 = k * stride + cfg.batch_size * dist->rank();
    const bool mine = w0 < n;
    if (!mine && !collective) break;
    if (!mine) w0 = 0;  // a stand-in: the first windows, weighted 0
    Batch b;
    std::vector<at::Tensor> rows;
    for (int64_t w = w0; w < std::min(n, w0 + cfg.batch_size); ++w) rows.push_back(data.slice(w * T, T + 1));
    b.tokens = at::stack(rows);
    const auto first = at::arange(w0, w0 + b.tokens.size(0), at::kLong).unsqueeze(1) * T;
    const auto targets = first + at::arange(1, T + 1, at::kLong).unsqueeze(0);  // dataset positions, [batch, T]
    const auto d = load(b, /*with_reference=*/false);
    auto valid = d.valid.to(at::kFloat) * (mine ? 1.0 : 0.0);
    sum += (losses(d, targets).to(valid.device()).to(at::kFloat) * valid).sum().item<double>();
    count += valid.sum().item<int64_t>();
  }
  auto totals = at::tensor({sum, static_cast<double>(count)}, at::kDouble);
  dist->allreduce_sum(totals);
  return totals[0].item<double>() / std::max<double>(totals[1].item<double>(), 1);
}

std::map<std::string, double> Trainer::evaluate() {
  auto& s = *s_;
  std::map<std::string, double> out;
  at::NoGradGuard no_grad;
  s.model->eval();
  for (const auto& [name, data] : s.evals)
    out[name] = s.eval_mean(*data, [&](const State::DeviceBatch& d, const at::Tensor&) { return s.forward_loss(d); },
                            s.sharded && s.sharded->level() == Sharding::Parameters);
  s.model->train();
  return out;
}

std::map<std::string, double> Trainer::evaluate_reference() {
  auto& s = *s_;
  const ReferenceSource* model_ref = s.eval_reference ? s.eval_reference.get() : s.reference.get();
  if (model_ref && !model_ref->has_model_losses()) model_ref = nullptr;
  at::NoGradGuard no_grad;
  for (const auto& [name, data] : s.evals) {
    const auto offline = s.eval_reference_offline.find(name);
    const bool known = s.eval_reference_loss.count(name) > 0;
    if (offline != s.eval_reference_offline.end()) {  // rho_score's losses of the same windows' targets
      if (!known)
        s.eval_reference_loss[name] = s.eval_mean(*data, [&](const State::DeviceBatch&, const at::Tensor& targets) {
          return offline->second->gather(targets);
        });
    } else if (model_ref && (!known || model_ref->moves())) {
      s.eval_reference_loss[name] = s.eval_mean(*data, [&](const State::DeviceBatch& d, const at::Tensor&) {
        return model_ref->model_losses(d.tokens);
      });
    }
  }
  return s.eval_reference_loss;
}

void Trainer::save_checkpoint() {
  auto& s = *s_;
  const auto& dist = *s.dist;
  Checkpoint ck;
  ck.state.step = s.step;
  ck.state.loader_step = s.loader->step();
  ck.state.tokens_seen = s.tokens_seen;
  ck.state.world_size = dist.world_size();
  ck.state.config_yaml = s.cfg.to_yaml();
  ck.state.model_config_json = s.model->config.to_hf_json();
  ck.state.handoff_step = s.handoff_step;
  if (dist.is_main()) {
    ck.rng_cpu = at::detail::getDefaultCPUGenerator().get_state();
    if (s.reference) ck.reference = s.reference->state();
    if (s.handoff_reference)
      for (auto& [name, t] : s.handoff_reference->state()) ck.reference.emplace_back("handoff." + name, t);
  }
  if (s.sharded) {
    // Each rank writes its own shard into a directory rank 0 prepared; rank 0 commits with every checksum.
    if (dist.is_main()) begin_sharded_checkpoint(s.cfg.out_dir, s.step);
    dist.barrier();
    const auto sha = write_checkpoint_shard(s.cfg.out_dir, s.step, dist.rank(), dist.world_size(), s.sharded->shard_state());
    const auto shas = dist.allgather(sha);
    if (dist.is_main()) {
      ck.sharding.level = s.sharded->level();
      ck.sharding.world_size = dist.world_size();
      ck.sharding.units = s.sharded->layout();
      ck.sharding.shard_sha256 = shas;
      commit_sharded_checkpoint(s.cfg.out_dir, ck, s.cfg.keep_checkpoints);
    }
  } else if (dist.is_main()) {
    for (const auto& item : s.model->named_parameters()) ck.model.emplace_back(item.key(), item.value());
    ck.optimizer = s.optim->state();
    rho::save_checkpoint(s.cfg.out_dir, ck, s.cfg.keep_checkpoints);
  }
  // No rank runs ahead of a checkpoint that is not yet on disk (a kill then resumes where all ranks agree).
  dist.barrier();
}

void Trainer::export_hf(const std::string& dir) {
  auto& s = *s_;
  if (!s.sharded || s.sharded->level() != Sharding::Parameters) {
    if (s.dist->is_main()) save_hf_model(*s.model, dir);
    return;
  }
  // Sharded weights: gathered unit by unit (collectively, in unit order); rank 0 writes each unit's tensors as
  // they come, so no rank ever holds the whole model.
  const auto& units = s.sharded->layout();
  if (!s.dist->is_main()) {
    for (size_t u = 0; u < units.size(); ++u) s.sharded->gather_unit(u);
    return;
  }
  std::vector<std::pair<std::string, std::vector<int64_t>>> shapes;
  std::map<std::string, size_t> unit_of;
  for (const auto& item : s.model->named_parameters()) shapes.emplace_back(item.key(), item.value().sizes().vec());
  for (size_t u = 0; u < units.size(); ++u)
    for (const auto& P : units[u].params) unit_of[P.name] = u;
  std::map<std::string, at::Tensor> root, current;  // unit 0 (used first and last), and the latest layer's
  size_t current_unit = 0;
  save_hf_tensors(s.model->config, shapes, [&](size_t i) {
    const size_t u = unit_of.at(shapes[i].first);
    auto& cache = u == 0 ? root : current;
    if (cache.empty() || (u != 0 && u != current_unit)) {
      cache.clear();
      for (auto& [name, t] : s.sharded->gather_unit(u)) cache[name] = t;
      if (u != 0) current_unit = u;
    }
    return cache.at(shapes[i].first);
  }, dir);
}

void Trainer::log_evaluation() {
  auto& s = *s_;
  const auto reference = evaluate_reference();
  for (const auto& [name, loss] : evaluate()) {
    nlohmann::json j = {{"type", "eval"}, {"step", s.step}, {"tokens", s.tokens_seen}, {"set", name},
                        {"loss", loss}, {"ppl", std::exp(loss)}};
    std::string line = fmt::format("\n  eval step {} {}: loss {:.4f} ppl {:.2f}", s.step, name, loss, std::exp(loss));
    if (const auto r = reference.find(name); r != reference.end()) {
      j["reference_loss"] = r->second;
      j["gap"] = loss - r->second;
      line += fmt::format(" | reference {:.4f} gap {:+.4f}", r->second, loss - r->second);
      s.check_caught_up(name, loss, r->second);
    }
    s.write_log(j);
    if (s.dist->is_main()) std::cerr << line << "\n";
  }
}

void Trainer::run() {
  auto& s = *s_;
  const auto& cfg = s.cfg;
  std::optional<Progress> progress;  // rank 0 reports
  if (s.dist->is_main())
    progress.emplace(fmt::format("{}[{}]", to_string(cfg.stage), fs::path(cfg.out_dir).filename().string()), cfg.max_steps, "step");
  auto t0 = std::chrono::steady_clock::now();
  int64_t tokens_since = 0;
  if (s.step == 0 && !s.evals.empty()) log_evaluation();
  while (s.step < cfg.max_steps) {
    const auto m = train_step();
    tokens_since += m.tokens;
    if (m.step % cfg.log_every == 0 || m.step == cfg.max_steps || m.skipped) {
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      const double tps = tokens_since / std::max(secs, 1e-9);
      t0 = std::chrono::steady_clock::now();
      tokens_since = 0;
      s.log_train_step(m, tps);
      if (progress)
        progress->update(m.step, fmt::format("loss {:.4f} lr {:.2e} {} tok/s sel {:.2f}", m.loss, m.lr,
                                          human_count(tps), m.selected_fraction));
    }
    if (!s.evals.empty() && (m.step % cfg.eval_every == 0 || m.step == cfg.max_steps)) log_evaluation();
    if (m.step % cfg.checkpoint_every == 0 || m.step == cfg.max_steps) save_checkpoint();
  }
  if (progress)
    progress->finish(fmt::format("{} steps, {} tokens, {} skipped", s.step, human_count(s.tokens_seen), s.skipped_steps));
  if (cfg.export_hf) export_hf((fs::path(cfg.out_dir) / "hf").string());
}

}  // namespace rho
