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
  if (prompt.empty()) throw Error("greedy_generate: the prompt is empty");
  std::function<bool(size_t, const std::vector<int64_t>&)> row_stop;
  if (stop) row_stop = [&](size_t, const std::vector<int64_t>& ids) { return stop(ids); };
  return greedy_generate_batch(model, {prompt}, options, row_stop)[0];
}

std::vector<Generation> greedy_generate_batch(
    LlamaImpl& model, const std::vector<std::vector<int64_t>>& prompts, const GenerateOptions& options,
    const std::function<bool(size_t row, const std::vector<int64_t>&)>& stop) {
  const int64_t max_pos = model.config.max_position_embeddings;
  if (options.max_new_tokens < 1) throw Error("greedy_generate: max_new_tokens must be at least 1");
  size_t longest = 0;
  for (const auto& p : prompts) {
    if (p.empty()) throw Error("greedy_generate: a prompt is empty");
    if (static_cast<int64_t>(p.size()) >= max_pos)
      throw Error(fmt::format("greedy_generate: a prompt of {} tokens leaves no room under max_position_embeddings={}",
                              p.size(), max_pos));
    longest = std::max(longest, p.size());
  }
  std::vector<Generation> out(prompts.size());
  if (prompts.empty()) return out;
  c10::InferenceMode guard;
  const auto device = model.output_weight().device();
  const int64_t n = static_cast<int64_t>(prompts.size()), width = static_cast<int64_t>(longest);
  auto tokens = at::zeros({n, width}, at::kLong);  // left padding: id 0, masked out
  auto valid = at::zeros({n, width}, at::kBool);
  for (int64_t r = 0; r < n; ++r) {
    const auto& p = prompts[r];
    const int64_t pad = width - static_cast<int64_t>(p.size());
    tokens[r].narrow(0, pad, static_cast<int64_t>(p.size())).copy_(at::tensor(at::ArrayRef<int64_t>(p), at::kLong));
    valid[r].narrow(0, pad, static_cast<int64_t>(p.size())).fill_(true);
  }
  // Prompts of one length need no padding: the plain causal path (flash attention where there is one).
  bool padded = false;
  for (const auto& p : prompts) padded = padded || static_cast<int64_t>(p.size()) != width;
  KVCache cache;
  auto next_tokens = [&](const at::Tensor& input, const at::Tensor& input_valid) {
    auto h = padded ? model.hidden_states(input.to(device), &cache, input_valid.to(device))
                    : model.hidden_states(input.to(device), &cache);
    auto logits = model.logits(h.select(1, h.size(1) - 1));  // the last position is real in every row
    if (options.vocab_limit > 0 && options.vocab_limit < logits.size(-1)) logits = logits.narrow(-1, 0, options.vocab_limit);
    return logits.argmax(-1).cpu();
  };
  std::vector<int64_t> rows(n);  // batch row -> prompt index, for the rows still generating
  for (int64_t r = 0; r < n; ++r) rows[r] = r;
  auto next = next_tokens(tokens, valid);
  for (;;) {
    std::vector<int64_t> keep, fed;
    for (size_t k = 0; k < rows.size(); ++k) {
      const int64_t r = rows[k], id = next[static_cast<int64_t>(k)].item<int64_t>();
      auto& g = out[r];
      // the same order of checks as greedy_generate
      if (id == options.eos_id) {
        g.stop_reason = "eos";
        continue;
      }
      g.ids.push_back(id);
      if (stop && stop(static_cast<size_t>(r), g.ids)) {
        g.stop_reason = "stop";
        continue;
      }
      if (static_cast<int64_t>(g.ids.size()) >= options.max_new_tokens) {
        g.stop_reason = "max_new_tokens";
        continue;
      }
      if (static_cast<int64_t>(prompts[r].size() + g.ids.size()) - 1 >= max_pos) {  // no position left for it
        g.stop_reason = "context";
        continue;
      }
      keep.push_back(static_cast<int64_t>(k));
      fed.push_back(id);
    }
    if (keep.empty()) break;
    if (keep.size() < rows.size()) {
      cache.keep_rows(at::tensor(at::ArrayRef<int64_t>(keep), at::kLong).to(device));
      std::vector<int64_t> still;
      for (int64_t k : keep) still.push_back(rows[k]);
      rows = std::move(still);
    }
    const auto input = at::tensor(at::ArrayRef<int64_t>(fed), at::kLong).view({-1, 1});
    next = next_tokens(input, at::ones_like(input, at::kBool));
  }
  return out;
}

std::vector<TextGeneration> generate_texts(LlamaImpl& model, const TextTokenizer& tok,
                                           const std::vector<std::string>& prompts, const std::vector<std::string>& stops,
                                           int64_t max_new_tokens, bool add_bos) {
  const int64_t max_pos = model.config.max_position_embeddings;
  if (max_new_tokens < 1 || max_new_tokens >= max_pos)
    throw Error(fmt::format("max_new_tokens {} must be in [1, max_position_embeddings={})", max_new_tokens, max_pos));
  std::vector<TextGeneration> out(prompts.size());
  std::vector<std::vector<int64_t>> ids(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    if (add_bos && tok.bos_id() >= 0) ids[i].push_back(tok.bos_id());
    const auto body = tok.encode(prompts[i]);
    ids[i].insert(ids[i].end(), body.begin(), body.end());
    const auto budget = static_cast<size_t>(max_pos - max_new_tokens);
    if (ids[i].size() > budget) {  // keep BOS and the end of the prompt, which holds the question
      const size_t front = add_bos && tok.bos_id() >= 0 ? 1 : 0;
      ids[i].erase(ids[i].begin() + front, ids[i].end() - (budget - front));
      out[i].truncated = true;
    }
    out[i].prompt_tokens = static_cast<int64_t>(ids[i].size());
  }
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
  const auto gens = greedy_generate_batch(model, ids, gen, [&](size_t, const std::vector<int64_t>& new_ids) {
    return stop_at(tok.decode(new_ids)) != std::string::npos;
  });
  for (size_t i = 0; i < prompts.size(); ++i) {
    out[i].new_tokens = static_cast<int64_t>(gens[i].ids.size());
    out[i].stop_reason = gens[i].stop_reason;
    out[i].text = tok.decode(gens[i].ids);
    if (const auto at = stop_at(out[i].text); at != std::string::npos) out[i].text.erase(at);
  }
  return out;
}

TextGeneration generate_text(LlamaImpl& model, const TextTokenizer& tok, const std::string& prompt,
                             const std::vector<std::string>& stops, int64_t max_new_tokens, bool add_bos) {
  return generate_texts(model, tok, {prompt}, stops, max_new_tokens, add_bos)[0];
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
