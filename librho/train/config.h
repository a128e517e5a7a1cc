#pragma once
// TrainConfig: everything one rho_pretrain run needs, read from one YAML file (strict: unknown keys, wrong
// types and out-of-range values are errors naming the file, line and key), with `section.key=value`
// overrides from the command line. The resolved config is saved beside the checkpoints.
//
// Every key is one row of a table in config.cpp (key, field, check, one-line doc, whether a resume may change
// it): the table reads, checks and writes the config, and prints the key table of docs/training.md
// (rho_pretrain --keys; ctest docs_options fails when the docs differ).
#include <string>
#include <utility>
#include <vector>

#include "librho/dist/sharding.h"
#include "librho/model/config.h"
#include "librho/slm/reference.h"
#include "librho/slm/slm_loss.h"
#include "librho/train/schedule.h"
#include "librho/util/device.h"

namespace rho {

enum class Stage { Clm, Slm };                    // train.stage: the reference (plain CLM) or selective training
enum class Precision { Auto, Fp32, Bf16 };        // train.precision: auto = bf16 autocast on CUDA, fp32 on the CPU
enum class NanPolicy { Stop, Skip };              // train.nan_policy on a non-finite loss or gradient norm
// slm.handoff: what SLM does once the model has caught up with its reference (the first eval set's loss within
// slm.catchup_margin of the reference's): go on (none), plain CLM (clm), raise the ratio linearly to 1 over
// slm.handoff_steps (anneal), or select against a moving average of the model itself (self).
enum class Handoff { None, Clm, Anneal, Self };
inline constexpr std::pair<Handoff, const char*> kHandoffNames[] = {
    {Handoff::None, "none"}, {Handoff::Clm, "clm"}, {Handoff::Anneal, "anneal"}, {Handoff::Self, "self"}};
std::string to_string(Stage v);
std::string to_string(Precision v);
std::string to_string(NanPolicy v);

struct EvalSet {
  std::string name, path;  // a token dataset folder
};

struct TrainConfig {
  // run
  std::string out_dir = "runs/default";
  uint64_t seed = 0;
  DeviceChoice device = DeviceChoice::Auto;
  double dist_timeout = 600;    // seconds a collective may wait for a peer before the run fails (data parallel)
  // model: a model config (inline or a file), or a Hugging Face directory to start from
  LlamaConfig model;
  std::string init_from;
  // data
  std::string train_data;
  int64_t seq_len = 256, batch_size = 8, grad_accum = 1;
  bool exclude_boundary = true;  // no loss on a document's first token (predicted across a document boundary)
  std::vector<EvalSet> eval_sets;
  int64_t eval_every = 100, eval_batches = 16;
  // optim
  double lr = 3e-4, min_lr = 3e-5, weight_decay = 0.1, beta1 = 0.9, beta2 = 0.95, eps = 1e-8, grad_clip = 1.0;
  int64_t warmup_steps = 100, max_steps = 1000;
  Schedule schedule = Schedule::Cosine;
  bool decay_norms_and_embeddings = false;
  // train
  Stage stage = Stage::Clm;
  Precision precision = Precision::Auto;
  bool activation_checkpointing = false;
  int64_t log_every = 10, checkpoint_every = 500, keep_checkpoints = 3;
  bool tensorboard = true;        // TensorBoard event files beside log.jsonl
  int64_t histogram_every = 100;  // steps between histograms of the SLM scores (0: none)
  NanPolicy nan_policy = NanPolicy::Stop;
  bool export_hf = true;
  Sharding sharding = Sharding::None;  // data parallel: what is split over the ranks (librho/dist/sharded.h)
  double bucket_mb = 25;  // data parallel: gradient all-reduce bucket size
  // slm
  SLMOptions slm;
  // The reference: rho_score outputs aligned with train_data (offline), Hugging Face directories run online, or
  // the training model itself (self_reference). Several references are combined per token (reference_combine).
  std::vector<std::string> reference_losses;
  std::vector<std::string> reference_model;
  ReferenceCombine reference_combine = ReferenceCombine::Mean;
  SelfReference self_reference = SelfReference::None;
  double ema_decay = 0.999;             // self_reference ema: ema = decay * ema + (1 - decay) * weights, per step
  int64_t slm_start_step = 0;           // warm start: plain CLM before this step (slm.start_step / start_fraction)
  std::vector<std::string> eval_reference;  // models whose loss on the eval sets is logged beside the model's
  std::vector<std::string> eval_reference_losses;  // "NAME=DIR": rho_score output for eval set NAME, instead
  double catchup_margin = 0.0;          // warn when the first eval set's loss comes within this of the reference's
  Handoff handoff = Handoff::None;      // and then do this (slm.handoff)
  int64_t handoff_steps = 100;          // anneal: steps over which the ratio rises to 1

  // Keys a resumed run may change beyond those that never affect the steps (rho_pretrain --allow-change KEY;
  // not read from YAML). See differences() and Trainer's resume.
  std::vector<std::string> resume_allow;

  // overrides: "optim.lr=1e-3", "slm.ratio=0.7", ... applied to the YAML before it is read.
  static TrainConfig from_yaml_file(const std::string& path, const std::vector<std::string>& overrides = {});
  static TrainConfig from_yaml_string(const std::string& text, const std::string& source,
                                      const std::vector<std::string>& overrides = {});
  std::string to_yaml() const;
  struct Change {
    std::string key, before, after;  // "section.key", values as YAML text ("" where absent)
  };
  // The keys whose values differ between `other_yaml` (a resolved config, e.g. a checkpoint's) and this one.
  std::vector<Change> differences(const std::string& other_yaml) const;
  // Keys that never change what the steps compute (logging, checkpoint cadence, evaluation, timeouts, where the
  // run lives): a resume may change them freely.
  static bool resume_safe(const std::string& key);
  // The key table of docs/training.md, as Markdown: key, default, meaning (rho_pretrain --keys).
  static std::string key_table();
  double lr_at(int64_t step) const;  // LrSchedule (train/schedule.h) of the optim section
};

}  // namespace rho
