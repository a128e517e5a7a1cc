#pragma once
// Where SLM's reference losses come from, every source behind one type:
//   offline    loss datasets written by rho_score for the training data (read by token position)
//   online     reference models (Hugging Face directories) run on each micro-batch, no grad
//   self       the training model's own starting weights (frozen), or a moving average of it (ema), for
//              continual pretraining without a separately trained reference
// Several sources are combined per token (mean or min; NaN propagates, and a NaN reference is never kept).
// The trainer owns one; research code can use it the same way (docs/training.md, "Your own training loop").
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "librho/model/llama.h"
#include "librho/slm/slm_loss.h"

namespace rho {

class TokenDataset;
class LossDataset;
struct Batch;

enum class SelfReference {
  None,
  Frozen,  // the weights the model starts from
  Ema,     // ema <- decay * ema + (1 - decay) * weights after every optimizer step
};
inline constexpr std::pair<SelfReference, const char*> kSelfReferenceNames[] = {
    {SelfReference::None, "none"}, {SelfReference::Frozen, "frozen"}, {SelfReference::Ema, "ema"}};
SelfReference parse_self_reference(const std::string& s);  // none | frozen | ema
std::string to_string(SelfReference s);

struct ReferenceOptions {
  std::vector<std::string> loss_dirs;   // rho_score outputs for the training data
  std::vector<std::string> model_dirs;  // Hugging Face directories run online
  SelfReference self = SelfReference::None;
  double ema_decay = 0.999;
  ReferenceCombine combine = ReferenceCombine::Mean;
};

// A host tensor on `device`: from pinned memory without blocking the host (a pageable copy would wait for the
// device's queue to drain). The tensor itself on the CPU.
at::Tensor to_device_async(const at::Tensor& host, at::Device device);

class ReferenceSource {
 public:
  // train: the dataset being trained on (offline losses must belong to it). model: the training model, already
  // initialised (self-reference copies its weights now). Online references run on `device`, under bf16
  // autocast when `autocast`.
  ReferenceSource(ReferenceOptions options, const TokenDataset& train, const LlamaImpl& model, at::Device device,
                  bool autocast);
  ~ReferenceSource();
  bool empty() const;
  // Reference losses of batch b's targets, [batch, seq] fp32 on the device (zeros when there is no source).
  // tokens: b.tokens already on the device.
  at::Tensor losses(const Batch& b, const at::Tensor& tokens) const;
  // Reference losses of other text (evaluation windows, [batch, seq + 1] tokens on the device) from the model
  // sources alone, combined as losses() combines them; undefined when there are no model sources, or when there
  // are offline ones too (their losses exist for the training data only, so the combination cannot be formed).
  at::Tensor model_losses(const at::Tensor& tokens) const;
  bool has_model_losses() const { return !models_.empty() && offline_.empty(); }
  // Whether the reference moves as the model trains (self_reference ema): then its losses on fixed text change.
  bool moves() const { return opt_.self == SelfReference::Ema; }
  // After each optimizer step (ema; found_inf: a float scalar on the device, 1 for a skipped step).
  void after_step(const LlamaImpl& model, const at::Tensor& found_inf);
  // Checkpoint state: the moving average as "ema.<parameter>" (empty unless ema), and its restore.
  std::vector<std::pair<std::string, at::Tensor>> state() const;
  void load_state(const std::map<std::string, at::Tensor>& state, const std::string& source);
  const ReferenceOptions& options() const { return opt_; }

 private:
  ReferenceOptions opt_;
  at::Device device_;
  bool autocast_;
  std::vector<std::unique_ptr<LossDataset>> offline_;
  std::vector<Llama> models_;  // online references; the self-reference last
  void append_model_losses(const at::Tensor& tokens, std::vector<at::Tensor>& losses) const;
};

}  // namespace rho
