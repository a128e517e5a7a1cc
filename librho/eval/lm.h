#pragma once
// Model-level evaluation primitives: greedy generation with the KV cache, log-probabilities of continuations
// of a prompt, and the held-out loss of a token dataset.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "librho/data/token_dataset.h"
#include "librho/eval/text_tokenizer.h"
#include "librho/model/llama.h"

namespace rho {

struct Generation {
  std::vector<int64_t> ids;  // the new tokens
  // "eos", "stop" (the callback said so), "max_new_tokens", or "context" (max_position_embeddings reached)
  std::string stop_reason;
};

// What greedy_generate_batch did (GenerateOptions::stats): prompt tokens run through the model (a prefix shared
// by every prompt counts once) and the positions the prefill bucket added (BatchDecoding::prefill_bucket), decoding
// steps after the prefills, and of them those replayed from CUDA graphs, and the graphs recorded; the wall time
// of the prefills and of the steps (rows leaving the batch and graph captures included). Each prefill and each
// step ends by reading its chosen tokens on the host, so the device work it queued before is in its time; the
// copy of a prefilled row into the batch's cache, queued after, is counted with the next step.
struct DecodeStats {
  int64_t prefill_tokens = 0, prefill_padding = 0, steps = 0, graph_replays = 0, graph_captures = 0;
  double prefill_seconds = 0, step_seconds = 0;
};

// How greedy_generate_batch decodes many prompts together. Every option set that leads there holds one
// (GenerateOptions, TextGenerateOptions, SuiteOptions, FewShotOptions), so each setting is given in one place.
struct BatchDecoding {
  int64_t batch_size = 0;  // sequences decoded together; 0: every prompt at once
  // Decoding steps of fixed shapes (finished rows idle in the batch until half are, the keys read rounded up to a
  // multiple of 128), replayed from CUDA graphs on CUDA (one per row count and key bucket; eager again, with a
  // message, if a capture fails) and run eagerly elsewhere. In fp32 the same tokens as without; in bf16 the steps
  // read more (masked) keys, so summation order differs and near-tied logits may pick another token.
  // Off by default, since in bf16 it may change an evaluation's tokens; on an H200 at the TinyLlama-1.1B shape it
  // decodes 1.53x as fast as eager steps, every step replayed (docs/performance.md, "Generation").
  bool cuda_graphs = false;
  // Each prefill's width (its longest prompt) rounded up to a multiple of this (within the positions the model
  // attends over), the rows right-padded, so that prompts of many lengths give few shapes: on Hopper GPUs
  // PyTorch's attention is cuDNN's, which builds a plan for each new shape. Causal attention keeps a prompt's
  // positions from the padding after it, so the tokens are the same in exact arithmetic; on a GPU other widths
  // may pick other kernels, which round differently. 0: 128 on CUDA, 1 (no padding) elsewhere.
  int64_t prefill_bucket = 0;
};

struct GenerateOptions {
  int64_t max_new_tokens = 256;
  int64_t eos_id = -1;      // generating it ends the generation (it is not returned); < 0: no EOS stop
  int64_t vocab_limit = 0;  // > 0: only ids below it are chosen (a model vocabulary padded past the tokenizer's)
  BatchDecoding batching;   // greedy_generate_batch
  // greedy_generate_batch: called once per prompt, when its generation has ended (e.g. for progress).
  std::function<void(size_t prompt, const Generation&)> on_finish;
  DecodeStats* stats = nullptr;  // not owned; counts are added when given
};

// Greedy decoding: the prompt is prefilled once into a KV cache, then each new token costs one forward pass
// of a single position. `stop(ids)`, when given, is asked after each new token with all new tokens so far.
// The prompt must be non-empty and shorter than max_position_embeddings.
Generation greedy_generate(LlamaImpl& model, const std::vector<int64_t>& prompt, const GenerateOptions& options,
                           const std::function<bool(const std::vector<int64_t>&)>& stop = {});

struct TextGeneration {
  std::string text;          // decoded, cut at the first stop string
  std::string stop_reason;   // as Generation's
  int64_t prompt_tokens = 0, new_tokens = 0;
  bool truncated = false;    // the prompt was cut from the left to fit
};

// Greedy decoding of many prompts, options.batching.batch_size sequences at a time (continuous batching): each
// batch row holds one sequence in a ragged KV cache (KVCache::ragged: no padding, nothing copied per step); every
// step gives each row one new token; when a sequence ends, the next waiting prompt is prefilled into its row, and
// when none waits the row leaves the batch. A prefix of 16 tokens or more that every prompt starts with (few-shot
// examples) is run once and shared by every prompt's prefill. Each sequence computes what it would alone, up to
// floating-point summation order. `stop(prompt, ids)` is asked as for greedy_generate. Results in the prompts' order.
std::vector<Generation> greedy_generate_batch(
    LlamaImpl& model, const std::vector<std::vector<int64_t>>& prompts, const GenerateOptions& options,
    const std::function<bool(size_t prompt, const std::vector<int64_t>&)>& stop = {});

struct TextGenerateOptions {
  std::vector<std::string> stops;  // generation ends at the first of them in the decoded text (cut there)
  int64_t max_new_tokens = 256;
  bool add_bos = true;             // begin with the tokenizer's BOS, when it has one
  BatchDecoding batching;          // generate_texts
  // generate_texts: called once per prompt, when its generation has ended.
  std::function<void(size_t prompt, const TextGeneration&)> on_finish;
};

// Greedy continuation of a text prompt: [BOS when add_bos and the tokenizer has one] + the prompt's tokens, cut
// from the left (BOS kept) when they leave fewer than max_new_tokens positions under max_position_embeddings; it
// stops at EOS, at the first stop string in the decoded text (the text is cut there), after max_new_tokens, or
// when the context is full. Only ids below the tokenizer's vocabulary are chosen.
TextGeneration generate_text(LlamaImpl& model, const TextTokenizer& tokenizer, const std::string& prompt,
                             const TextGenerateOptions& options);

// generate_text for several prompts (greedy_generate_batch: options.batching).
std::vector<TextGeneration> generate_texts(LlamaImpl& model, const TextTokenizer& tokenizer,
                                           const std::vector<std::string>& prompts, const TextGenerateOptions& options);

// For each continuation, log p(c[i] | prompt, c[<i]) for every token i (natural log). The prompt is prefilled
// once; the continuations then run together, batched after its keys and values, in passes of at most
// `pass_positions` cached positions (each row holds the prompt's and its own; at least one row a pass: a memory
// bound). `shared`, when given, holds the keys and values of the prompt's first shared->length() tokens (a
// growing cache of one row, as prefill_cache makes it; shorter than the prompt): only the rest of the prompt is run,
// after them. The caller vouches that the prompt starts with those tokens: the cache holds no ids to check.
std::vector<std::vector<double>> continuation_logprobs(LlamaImpl& model, const std::vector<int64_t>& prompt,
                                                       const std::vector<std::vector<int64_t>>& continuations,
                                                       const KVCache* shared = nullptr,
                                                       int64_t pass_positions = 16384);

// How many tokens every prompt starts with, leaving each at least one of its own (its last position chooses or
// scores what follows): 0 for fewer than two prompts or fewer than 16 such tokens. Few-shot prompts share their
// examples; greedy_generate_batch and run_choice run them once.
int64_t shared_prefix_length(const std::vector<std::vector<int64_t>>& prompts);

// The keys and values of `tokens` run from position 0: a growing cache of one row (inference mode).
KVCache prefill_cache(LlamaImpl& model, const std::vector<int64_t>& tokens);

struct HeldoutOptions {
  int64_t seq_len = 2048;
  int64_t batch_size = 8;
  int64_t rows_per_chunk = 1024;
  bool progress = true;
};

struct HeldoutLoss {
  int64_t tokens = 0;            // targets counted
  int64_t document_starts = 0;   // targets right after an EOS, left out
  double loss_sum = 0;
  double loss() const { return tokens ? loss_sum / tokens : 0.0; }
  double perplexity() const;     // exp(loss)
};

// Mean next-token loss over every target of the dataset, in the windows rho_pretrain's loader and rho_score
// use (window w: tokens [w*seq_len, w*seq_len + seq_len]), leaving out targets that follow an EOS: the first
// token of a document has no context from its own document.
HeldoutLoss heldout_loss(Llama model, const TokenDataset& data, const HeldoutOptions& options);

}  // namespace rho
