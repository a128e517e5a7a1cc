#include "librho/eval/lm.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <fmt/format.h>

#include <cmath>

#include "librho/score/token_scorer.h"
#include "librho/util/error.h"
#include "librho/util/progress.h"

namespace rho {
namespace {
at::Tensor ids_tensor(const std::vector<int64_t>& ids, const at::Device& device) {
  return at::tensor(at::ArrayRef<int64_t>(ids), at::kLong).to(device).unsqueeze(0);
}
}  // namespace

Generation greedy_generate(LlamaImpl& model, const std::vector<int64_t>& prompt, const GenerateOptions& options,
                           const std::function<bool(const std::vector<int64_t>&)>& stop) {
  const int64_t max_pos = model.config.max_position_embeddings;
  if (prompt.empty()) throw Error("greedy_generate: the prompt is empty");
  if (static_cast<int64_t>(prompt.size()) >= max_pos)
    throw Error(fmt::format("greedy_generate: a prompt of {} tokens leaves no room under max_position_embeddings={}",
                            prompt.size(), max_pos));
  if (options.max_new_tokens < 1) throw Error("greedy_generate: max_new_tokens must be at least 1");
  c10::InferenceMode guard;
  const auto device = model.output_weight().device();
  KVCache cache;
  auto next_token = [&](const at::Tensor& input) {
    auto h = model.hidden_states(input, &cache);
    auto logits = model.logits(h.select(1, h.size(1) - 1));  // only the last position predicts
    if (options.vocab_limit > 0 && options.vocab_limit < logits.size(-1)) logits = logits.narrow(-1, 0, options.vocab_limit);
    return logits.argmax(-1).item<int64_t>();
  };
  Generation g;
  int64_t next = next_token(ids_tensor(prompt, device));
  for (;;) {
    if (next == options.eos_id) {
      g.stop_reason = "eos";
      break;
    }
    g.ids.push_back(next);
    if (stop && stop(g.ids)) {
      g.stop_reason = "stop";
      break;
    }
    if (static_cast<int64_t>(g.ids.size()) >= options.max_new_tokens) {
      g.stop_reason = "max_new_tokens";
      break;
    }
    if (cache.length() >= max_pos) {  // the next token would have no position left
      g.stop_reason = "context";
      break;
    }
    next = next_token(ids_tensor({next}, device));
  }
  return g;
}

TextGeneration generate_text(LlamaImpl& model, const TextTokenizer& tok, const std::string& prompt,
                             const std::vector<std::string>& stops, int64_t max_new_tokens, bool add_bos) {
  const int64_t max_pos = model.config.max_position_embeddings;
  if (max_new_tokens < 1 || max_new_tokens >= max_pos)
    throw Error(fmt::format("max_new_tokens {} must be in [1, max_position_embeddings={})", max_new_tokens, max_pos));
  TextGeneration r;
  std::vector<int64_t> ids;
  if (add_bos && tok.bos_id() >= 0) ids.push_back(tok.bos_id());
  const auto body = tok.encode(prompt);
  ids.insert(ids.end(), body.begin(), body.end());
  const auto budget = static_cast<size_t>(max_pos - max_new_tokens);
  if (ids.size() > budget) {  // keep BOS and the end of the prompt, which holds the question
    const size_t front = add_bos && tok.bos_id() >= 0 ? 1 : 0;
    ids.erase(ids.begin() + front, ids.end() - (budget - front));
    r.truncated = true;
  }
  r.prompt_tokens = static_cast<int64_t>(ids.size());
  auto stop_at = [&](const std::string& text) {  // the earliest stop string in the text
    size_t at = std::string::npos;
    for (const auto& s : stops)
      if (!s.empty()) at = std::min(at, text.find(s));
    return at;
  };
  GenerateOptions gen;
  gen.max_new_tokens = max_new_tokens;
  gen.eos_id = tok.eos_id();
  gen.vocab_limit = tok.vocab_size();
  const auto g = greedy_generate(model, ids, gen, [&](const std::vector<int64_t>& new_ids) {
    return stop_at(tok.decode(new_ids)) != std::string::npos;
  });
  r.new_tokens = static_cast<int64_t>(g.ids.size());
  r.stop_reason = g.stop_reason;
  r.text = tok.decode(g.ids);
  if (const auto at = stop_at(r.text); at != std::string::npos) r.text.erase(at);
  return r;
}

std::vector<std::vector<double>> continuation_logprobs(LlamaImpl& model, const std::vector<int64_t>& prompt,
                                                       const std::vector<std::vector<int64_t>>& continuations) {
  const int64_t max_pos = model.config.max_position_embeddings;
  if (prompt.empty()) throw Error("continuation_logprobs: the prompt is empty");
  c10::InferenceMode guard;
  const auto device = model.output_weight().device();
  KVCache prompt_cache;
  auto h = model.hidden_states(ids_tensor(prompt, device), &prompt_cache);
  const auto first = at::log_softmax(model.logits(h.select(1, h.size(1) - 1)).to(at::kFloat), -1).squeeze(0).cpu();
  std::vector<std::vector<double>> out;
  for (const auto& c : continuations) {
    std::vector<double> lp;
    if (!c.empty()) {
      const int64_t total = static_cast<int64_t>(prompt.size() + c.size()) - 1;
      if (total > max_pos)
        throw Error(fmt::format("continuation_logprobs: {} positions exceed max_position_embeddings={}", total, max_pos));
      lp.push_back(first[c[0]].item<double>());
      if (c.size() > 1) {
        KVCache cache = prompt_cache;  // the cache grows by concatenation, so the copy leaves the prompt's intact
        const std::vector<int64_t> inputs(c.begin(), c.end() - 1), targets(c.begin() + 1, c.end());
        auto logp = at::log_softmax(model.logits(model.hidden_states(ids_tensor(inputs, device), &cache)).to(at::kFloat), -1);
        auto picked = logp.squeeze(0).gather(1, ids_tensor(targets, device).view({-1, 1})).view({-1}).to(at::kDouble).cpu();
        const double* p = picked.data_ptr<double>();
        lp.insert(lp.end(), p, p + picked.numel());
      }
    }
    out.push_back(std::move(lp));
  }
  return out;
}

double HeldoutLoss::perplexity() const { return std::exp(loss()); }

HeldoutLoss heldout_loss(Llama model, const TokenDataset& data, const HeldoutOptions& options) {
  ScoreOptions so;
  so.seq_len = options.seq_len;
  so.batch_size = options.batch_size;
  so.rows_per_chunk = options.rows_per_chunk;
  so.progress = false;
  TokenScorer scorer(std::move(model), "", so);
  const int64_t n = data.num_tokens(), eos = data.manifest().eos_id;
  // Ranges [1 + j*piece, 1 + (j+1)*piece) hold whole windows, so no window is computed twice.
  const int64_t piece = options.seq_len * options.batch_size * 8;
  Progress progress("held-out loss " + data.dir(), n, "tok");
  HeldoutLoss r;
  for (int64_t b = 1; b < n; b += piece) {  // position 0 is no target
    const int64_t e = std::min(n, b + piece);
    const auto losses = scorer.score_range(data, b, e);
    const auto previous = data.slice(b - 1, e - b);
    const auto keep = eos >= 0 ? previous != eos : at::ones_like(previous, at::kBool);
    const auto kept = losses.masked_select(keep);
    r.tokens += kept.numel();
    r.document_starts += (e - b) - kept.numel();
    r.loss_sum += kept.sum(at::kDouble).item<double>();
    if (options.progress) progress.update(e);
  }
  if (options.progress) progress.finish(fmt::format("loss {:.4f}", r.loss()));
  return r;
}

}  // namespace rho
