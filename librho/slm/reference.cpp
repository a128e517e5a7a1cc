#include "librho/slm/reference.h"

#include <ATen/ops/zeros.h>
#include <fmt/format.h>

#include "librho/data/token_dataset.h"
#include "librho/io/hf_checkpoint.h"
#include "librho/model/autocast.h"
#include "librho/score/token_scorer.h"
#include "librho/util/enum_names.h"
#include "librho/util/error.h"

namespace rho {

SelfReference parse_self_reference(const std::string& s) {
  if (const auto e = enum_from_name(kSelfReferenceNames, s)) return *e;
  throw Error(fmt::format("slm.self_reference: '{}' is not one of {}", s, enum_names(kSelfReferenceNames)));
}
std::string to_string(SelfReference s) { return enum_name(kSelfReferenceNames, s); }

at::Tensor to_device_async(const at::Tensor& host, at::Device device) {
  if (!device.is_cuda()) return host;
  return (host.is_pinned() ? host : host.pin_memory()).to(device, /*non_blocking=*/true);
}

ReferenceSource::ReferenceSource(ReferenceOptions options, const TokenDataset& train, const LlamaImpl& model,
                                 at::Device device, bool autocast)
    : opt_(std::move(options)), device_(device), autocast_(autocast) {
  for (const auto& path : opt_.loss_dirs) {
    offline_.push_back(std::make_unique<LossDataset>(LossDataset::open(path)));
    offline_.back()->check_matches(train);
  }
  for (const auto& dir : opt_.model_dirs) models_.push_back(load_hf_model(dir));
  if (opt_.self != SelfReference::None) {
    Llama copy(model.config);
    at::NoGradGuard no_grad;
    auto src = model.parameters();
    auto dst = copy->parameters();
    for (size_t i = 0; i < src.size(); ++i) dst[i].copy_(src[i]);
    for (auto& p : dst) p.requires_grad_(false);
    models_.push_back(copy);
  }
  for (auto& r : models_) {
    r->to(device_);
    r->eval();
  }
}

ReferenceSource::~ReferenceSource() = default;

bool ReferenceSource::empty() const { return offline_.empty() && models_.empty(); }

at::Tensor ReferenceSource::losses(const Batch& b, const at::Tensor& tokens) const {
  const auto targets = tokens.narrow(1, 1, tokens.size(1) - 1);
  std::vector<at::Tensor> losses;
  for (const auto& r : offline_) losses.push_back(to_device_async(r->gather(b.target_positions()), device_));
  append_model_losses(tokens, losses);
  if (losses.empty()) return at::zeros(targets.sizes(), at::TensorOptions().dtype(at::kFloat).device(device_));
  return combine_reference_losses(losses, opt_.combine);
}

void ReferenceSource::append_model_losses(const at::Tensor& tokens, std::vector<at::Tensor>& losses) const {
  const auto inputs = tokens.narrow(1, 0, tokens.size(1) - 1), targets = tokens.narrow(1, 1, tokens.size(1) - 1);
  for (Llama r : models_) {  // a copy of the holder: token_loss is not const
    at::NoGradGuard no_grad;
    AutocastScope ac(device_.type(), at::kBFloat16, autocast_);
    losses.push_back(r->token_loss(inputs, targets).to(at::kFloat));
  }
}

at::Tensor ReferenceSource::model_losses(const at::Tensor& tokens) const {
  if (!has_model_losses()) return {};
  std::vector<at::Tensor> losses;
  append_model_losses(tokens, losses);
  return combine_reference_losses(losses, opt_.combine);
}

void ReferenceSource::after_step(const LlamaImpl& model, const at::Tensor& found_inf) {
  if (opt_.self != SelfReference::Ema) return;
  at::NoGradGuard no_grad;
  auto ema = models_.back()->parameters();
  auto params = model.parameters();
  const auto weight = (1.0 - found_inf) * (1.0 - opt_.ema_decay);
  for (size_t i = 0; i < params.size(); ++i) ema[i].lerp_(params[i], weight);
}

std::vector<std::pair<std::string, at::Tensor>> ReferenceSource::state() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  if (opt_.self == SelfReference::Ema)
    for (const auto& item : models_.back()->named_parameters()) out.emplace_back("ema." + item.key(), item.value());
  return out;
}

void ReferenceSource::load_state(const std::map<std::string, at::Tensor>& state, const std::string& source) {
  if (opt_.self != SelfReference::Ema) return;
  at::NoGradGuard no_grad;
  for (auto& item : models_.back()->named_parameters()) {
    const auto it = state.find("ema." + item.key());
    if (it == state.end())
      throw Error(fmt::format("{}: no moving-average weights 'ema.{}' (slm.self_reference ema)", source, item.key()));
    item.value().copy_(it->second);
  }
}

}  // namespace rho
