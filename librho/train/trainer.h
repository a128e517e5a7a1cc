#pragma once
// The trainer behind rho_pretrain: stage 1 (plain causal LM on high-quality data, "clm") and stage 3
// (Selective Language Modeling, "slm") are the same loop; SLM only changes which tokens count in the loss.
//
// One optimizer step:
//   1. take grad_accum micro-batches from the loader;
//   2. SLM with scope "step": score every micro-batch first (a no-grad forward) and select over all of them;
//   3. per micro-batch: forward, per-token loss, mask (valid tokens for CLM; the SLM selection otherwise),
//      loss = sum(kept losses) / kept (per micro-batch, or per step for scope "step"), backward;
//   4. check the loss and gradient norm are finite, clip, AdamW step with the scheduled learning rate;
//   5. log, evaluate and checkpoint on their periods.
//
// Data parallel (a DistContext of several ranks, docs/distributed.md): every rank reads its own part of each
// step's global batch; token counts (valid, kept) are all-reduced before backward so every rank's loss is
// normalised by the global count, and the gradients are summed with bucketed all-reduces overlapped with the
// last micro-batch's backward: the update equals one process's over the global batch. Metrics are global;
// rank 0 writes logs, config and the export. train.sharding splits AdamW's state, the gradients and the
// weights over the ranks (librho/dist/sharded.h); each rank then writes its own shard of the checkpoints.
#include <map>
#include <memory>
#include <string>

#include "librho/model/llama.h"
#include "librho/train/config.h"

namespace rho {

class DistContext;

struct StepMetrics {
  int64_t step = 0;           // the step just completed (1-based count of optimizer steps)
  double loss = 0;            // the objective: mean loss over kept tokens
  double loss_all = 0;        // mean loss over every valid token (CLM's view, comparable across stages)
  double lr = 0, grad_norm = 0;
  double selected_fraction = 1, kept_score = 0, dropped_score = 0;
  int64_t tokens = 0;         // tokens in this step's batches (all ranks)
  bool skipped = false;       // non-finite loss or gradient skipped under nan_policy "skip"
};

class Trainer {
 public:
  // resume: continue from the newest checkpoint in config.out_dir (exactly: same batches, same weights; an
  // unsharded checkpoint needs the world size that wrote it, a sharded one the same global batch).
  // dist: the data-parallel group (none: a single process).
  Trainer(TrainConfig config, bool resume, std::shared_ptr<DistContext> dist = nullptr);
  ~Trainer();
  void run();
  StepMetrics train_step();
  std::map<std::string, double> evaluate();  // eval set name -> mean token loss (windows split over ranks)
  // eval set name -> the reference's mean token loss on the same windows: from slm.eval_reference, else from the
  // run's online or self reference; empty when there is none (an offline reference alone needs
  // slm.eval_reference). Computed once, or at every call when the reference moves (self_reference ema).
  std::map<std::string, double> evaluate_reference();
  // Both, logged (log.jsonl eval lines with reference_loss and gap; stderr), with the catch-up warnings, and
  // slm.handoff applied when the first eval set's gap comes within slm.catchup_margin. run() calls it every
  // data.eval_every steps.
  void log_evaluation();
  void save_checkpoint();                    // collective under data parallelism; rank 0 writes
  void export_hf(const std::string& dir);
  Llama& model();  // under train.sharding parameters its layers' weights are gathered only while they run
  int64_t step() const;
  const TrainConfig& config() const;

 private:
  struct State;
  std::unique_ptr<State> s_;
};

}  // namespace rho
