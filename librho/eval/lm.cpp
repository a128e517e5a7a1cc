#include "librho/eval/lm.h"

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <c10/core/InferenceMode.h>
#include <fmt/format.h>
#ifdef RHO_WITH_CUDA
#include <ATen/core/CachingHostAllocator.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <ATen/cuda/MemPool.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#endif

#include <algorithm>
#include <chrono>
#include <cmath>
#include <iostream>
#include <map>
#include <memory>

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

namespace {
using RowStop = std::function<bool(size_t prompt, const std::vector<int64_t>&)>;

// A growing cache of one row seen as `rows` rows: views, not copies (a pass that extends it then copies each row).
KVCache expand_rows(const KVCache& one_row, int64_t rows) {
  KVCache cache;
  for (size_t l = 0; l < one_row.keys.size(); ++l) {
    cache.keys.push_back(one_row.keys[l].expand({rows, -1, -1, -1}));
    cache.values.push_back(one_row.values[l].expand({rows, -1, -1, -1}));
  }
  return cache;
}

// Greedy choice for each row of hidden states [rows, hidden], on the hidden states' device.
at::Tensor greedy_ids(LlamaImpl& model, const at::Tensor& hidden, int64_t vocab_limit) {
  auto logits = model.logits(hidden);
  if (vocab_limit > 0 && vocab_limit < logits.size(-1)) logits = logits.narrow(-1, 0, vocab_limit);
  return logits.argmax(-1);
}

std::vector<int64_t> to_host(const at::Tensor& ids) {
  const auto c = ids.cpu();
  return {c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel()};
}

#ifdef RHO_WITH_CUDA
// Fixed-shape decoding steps replayed from CUDA graphs, one per (rows, keys read): a step's few hundred kernels
// are recorded once and then launched together, removing the per-operation launch and dispatch cost that
// dominates a small decoding step. Inputs go through each graph's own device buffer (tokens and columns, copied
// from one pinned host buffer); the graphs read and write the KV cache's tensors in place, so they are cleared
// whenever those tensors move (KVCache::keep_rows). All graphs record on one side stream into one memory pool:
// they replay one at a time, and each keeps its output alive.
class StepGraphs {
 public:
  explicit StepGraphs(at::Device device)
      : device_(device), side_(at::cuda::getStreamFromPool(false, device.index())), pool_(make_pool(device)) {}

  // Records the step for this (rows, keys) when it is new (may throw: then nothing is kept), then replays it.
  std::vector<int64_t> run(LlamaImpl& model, KVCache& cache, const std::vector<int64_t>& tokens,
                           const std::vector<int64_t>& columns, int64_t keys, int64_t vocab_limit, DecodeStats* stats) {
    const auto rows = static_cast<int64_t>(tokens.size());
    if (!host_.defined() || host_.size(1) != rows)
      host_ = at::empty({2, rows}, at::TensorOptions().dtype(at::kLong).pinned_memory(true));
    std::copy(tokens.begin(), tokens.end(), host_.data_ptr<int64_t>());
    std::copy(columns.begin(), columns.end(), host_.data_ptr<int64_t>() + rows);
    auto& g = graphs_[{rows, keys}];
    if (!g) {
      try {
        g = capture(model, cache, keys, vocab_limit);
      } catch (const std::exception& e) {
        graphs_.erase({rows, keys});
        throw CaptureFailed(e.what());
      }
      if (stats) ++stats->graph_captures;
    }
    g->inputs.copy_(host_, /*non_blocking=*/true);  // the host buffer is rewritten only after to_host's wait
    g->graph.replay();
    if (stats) ++stats->graph_replays;
    return to_host(g->ids);
  }
  // Drops every graph (the cache's tensors moved) and their pool, whose memory goes back to the device; the next
  // graphs record into a new pool. (A pool id whose last graph is gone is refused to later captures by the pinned
  // host allocator, which CUDAGraph registers it with too, and which at::cuda::MemPool does not hold.)
  void clear() {
    graphs_.clear();
    pool_ = make_pool(device_);
  }

  struct CaptureFailed : std::runtime_error {
    using std::runtime_error::runtime_error;
  };

 private:
  struct Graph {
    at::cuda::CUDAGraph graph;
    at::Tensor inputs, ids;  // [2, rows]: tokens, columns; the output
  };

  // Records the step on the side stream (as torch.cuda.graph does), after one eager run there that makes any lazy
  // allocations outside the capture; that run's cache writes are the ones the replay makes again.
  std::unique_ptr<Graph> capture(LlamaImpl& model, KVCache& cache, int64_t keys, int64_t vocab_limit) {
    auto g = std::make_unique<Graph>();
    g->inputs = host_.to(device_);
    const auto tokens = g->inputs[0].view({-1, 1}), columns = g->inputs[1];
    auto step = [&] {
      return greedy_ids(model, model.ragged_step(tokens, columns, keys, /*mask=*/true, cache).select(1, 0), vocab_limit);
    };
    const auto main = at::cuda::getCurrentCUDAStream(device_.index());
    at::cuda::CUDAEvent ready, done;
    ready.record(main);
    ready.block(side_);
    {
      const c10::cuda::CUDAStreamGuard guard(side_);
      bool begun = false;
      try {
        step();
        begun = true;
        g->graph.capture_begin(pool_->id());
        g->ids = step();
        g->graph.capture_end();
        begun = false;
      } catch (...) {
        if (begun) abandon_capture(*g);
        side_.synchronize();  // the warm-up may still read buffers that are freed with g
        throw;
      }
    }
    done.record(side_);
    done.block(main);
    return g;
  }

  // After a failure between capture_begin and capture_end (or inside either): leaves capture mode, and stops both
  // allocators (the device's caching allocator and the pinned host one) from allocating to the pool, each only
  // where capture_begin got as far as registering it and capture_end did not undo it. Errors here are the
  // allocators saying there was nothing to undo.
  void abandon_capture(Graph& g) {
    try {
      g.graph.capture_end();
      return;
    } catch (...) {
    }
    // Where that succeeds, the capture's reference to the pool (which only a graph whose capture ended gives
    // back) is given back too, so the pool is freed with this object.
    try {
      c10::cuda::CUDACachingAllocator::endAllocateToPool(device_.index(), pool_->id());
      c10::cuda::CUDACachingAllocator::releasePool(device_.index(), pool_->id());
    } catch (...) {
    }
    try {
      at::getHostAllocator(at::kCUDA)->end_allocate_to_pool(pool_->id());
      at::getHostAllocator(at::kCUDA)->release_pool(pool_->id());
    } catch (...) {
    }
  }

  // The graphs' memory pool, held here as well as by each graph, so that it outlives them; replaced by clear.
  // Declared before graphs_, which go first.
  static std::unique_ptr<at::cuda::MemPool> make_pool(at::Device device) {
    const c10::cuda::CUDAGuard guard(device.index());  // MemPool takes the current device
    return std::make_unique<at::cuda::MemPool>();
  }

  at::Device device_;
  c10::cuda::CUDAStream side_;
  std::unique_ptr<at::cuda::MemPool> pool_;
  at::Tensor host_;  // pinned [2, rows]: the next step's tokens and columns
  std::map<std::pair<int64_t, int64_t>, std::unique_ptr<Graph>> graphs_;
};
#endif

// greedy_generate_batch's state: a ragged KV cache whose rows each hold one prompt's sequence. A row whose
// sequence ends takes the next waiting prompt (its prefill); when none waits, finished rows leave the batch.
class BatchDecoder {
 public:
  BatchDecoder(LlamaImpl& model, const std::vector<std::vector<int64_t>>& prompts, const GenerateOptions& options,
               const RowStop& stop)
      : model_(model), prompts_(prompts), options_(options), stop_(stop), out_(prompts.size()),
        device_(model.output_weight().device()) {}

  std::vector<Generation> run() {
    if (prompts_.empty()) return out_;
    size_t longest = 0;
    for (const auto& p : prompts_) longest = std::max(longest, p.size());
    const int64_t n = static_cast<int64_t>(prompts_.size());
    const int64_t rows = options_.batching.batch_size > 0 ? std::min(options_.batching.batch_size, n) : n;
    // A row's last new token needs no position, so a row never holds more than its prompt + max_new_tokens - 1.
    const int64_t capacity = std::min(model_.config.max_position_embeddings,
                                      static_cast<int64_t>(longest) + options_.max_new_tokens - 1);
    cache_ = KVCache::ragged(rows, capacity);
    row_prompt_.assign(rows, -1);
    row_next_.assign(rows, 0);
    std::vector<int64_t> all(rows);
    for (int64_t r = 0; r < rows; ++r) all[r] = r;
    {
      const Timed prefill(options_.stats ? &options_.stats->prefill_seconds : nullptr);
      prefill_shared_prefix();
      fill(all);
    }
    while (true) {
      std::vector<int64_t> freed;
      {
        const Timed steps(options_.stats ? &options_.stats->step_seconds : nullptr);
        if (!drop_free_rows()) break;
        freed = step();
      }
      const Timed prefill(options_.stats ? &options_.stats->prefill_seconds : nullptr);
      fill(freed);
    }
    return std::move(out_);
  }

 private:
  // Adds the wall time of its scope to *total (when given).
  struct Timed {
    explicit Timed(double* total) : total(total), start(std::chrono::steady_clock::now()) {}
    ~Timed() {
      if (total) *total += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    }
    double* total;
    std::chrono::steady_clock::time_point start;
  };

  // The stop rules, in this order, after the prompt's sequence produced `id`; true: it goes on with `id`.
  bool accept(size_t prompt, int64_t id) {
    auto& g = out_[prompt];
    const char* reason = nullptr;
    if (id == options_.eos_id) {
      reason = "eos";
    } else {
      g.ids.push_back(id);
      if (stop_ && stop_(prompt, g.ids))
        reason = "stop";
      else if (static_cast<int64_t>(g.ids.size()) >= options_.max_new_tokens)
        reason = "max_new_tokens";
      else if (static_cast<int64_t>(prompts_[prompt].size() + g.ids.size()) - 1 >= model_.config.max_position_embeddings)
        reason = "context";  // no position left for it
    }
    if (!reason) return true;
    g.stop_reason = reason;
    if (options_.on_finish) options_.on_finish(prompt, g);
    return false;
  }

  // Greedy choice for each row of hidden states [rows, hidden], on the CPU.
  std::vector<int64_t> choose(const at::Tensor& hidden) {
    return to_host(greedy_ids(model_, hidden, options_.vocab_limit));
  }

  // The prompts' shared prefix (shared_prefix_length: the few-shot examples every item's prompt starts with) is run
  // once; each prompt's prefill then runs only its own tokens after it.
  void prefill_shared_prefix() {
    const int64_t common = shared_prefix_length(prompts_);
    if (common == 0) return;
    shared_ = common;
    prefix_ = prefill_cache(model_, {prompts_[0].begin(), prompts_[0].begin() + common});
    if (options_.stats) options_.stats->prefill_tokens += shared_;
  }

  // A prefill's width rounded up to the bucket (BatchDecoding::prefill_bucket), within the positions the model
  // attends over after the shared prefix (max_position_embeddings, and the sliding window where there is one).
  int64_t padded_width(int64_t width) const {
    const auto& b = options_.batching;
    const int64_t bucket = b.prefill_bucket > 0 ? b.prefill_bucket : device_.is_cuda() ? 128 : 1;
    int64_t limit = model_.config.max_position_embeddings;
    if (model_.config.sliding_window > 0) limit = std::min(limit, model_.config.sliding_window);
    return std::max(width, std::min((width + bucket - 1) / bucket * bucket, limit - shared_));
  }

  // Prefills waiting prompts into the free rows, several at once (right-padded: causal attention keeps each
  // prompt's positions to itself, and padding comes after them), until the rows or the prompts run out. With a
  // shared prefix, each batch starts from its keys and values (a view, not a copy) and runs the rest.
  void fill(const std::vector<int64_t>& free_rows) {
    size_t used = 0;
    while (used < free_rows.size() && next_prompt_ < prompts_.size()) {
      const size_t first = next_prompt_, count = std::min(free_rows.size() - used, prompts_.size() - first);
      next_prompt_ += count;
      int64_t width = 0;
      for (size_t i = 0; i < count; ++i) width = std::max<int64_t>(width, prompts_[first + i].size() - shared_);
      const int64_t unpadded = width;
      width = padded_width(width);
      if (options_.stats) options_.stats->prefill_padding += static_cast<int64_t>(count) * (width - unpadded);
      auto tokens = at::zeros({static_cast<int64_t>(count), width}, at::kLong);
      std::vector<int64_t> last(count);  // flat index of each prompt's last position
      for (size_t i = 0; i < count; ++i) {
        const auto& p = prompts_[first + i];
        const auto own = static_cast<int64_t>(p.size()) - shared_;
        tokens[i].narrow(0, 0, own).copy_(at::tensor(at::ArrayRef<int64_t>(p.data() + shared_, own), at::kLong));
        last[i] = static_cast<int64_t>(i) * width + own - 1;
        if (options_.stats) options_.stats->prefill_tokens += own;
      }
      KVCache prefill = expand_rows(prefix_, static_cast<int64_t>(count));
      if (next_prompt_ == prompts_.size()) prefix_ = KVCache();  // every prompt has started: its views are enough
      const auto h = model_.hidden_states(tokens.to(device_), &prefill);
      const auto ids = choose(h.reshape({-1, h.size(-1)})
                                  .index_select(0, at::tensor(at::ArrayRef<int64_t>(last), at::kLong).to(device_)));
      for (size_t i = 0; i < count; ++i) {
        if (!accept(first + i, ids[i])) continue;
        const int64_t row = free_rows[used++];
        cache_.set_row(row, prefill, static_cast<int64_t>(i), static_cast<int64_t>(prompts_[first + i].size()));
        row_prompt_[row] = static_cast<int64_t>(first + i);
        row_next_[row] = ids[i];
      }
    }
  }

  // Rows without a sequence leave the cache (only when no prompt waits: fill takes them otherwise); with
  // fixed-shape steps only once half the rows are idle, since every new row count needs new graphs. False when
  // no row is left.
  bool drop_free_rows() {
    std::vector<int64_t> keep, prompt, next;
    for (size_t r = 0; r < row_prompt_.size(); ++r)
      if (row_prompt_[r] >= 0) {
        keep.push_back(static_cast<int64_t>(r));
        prompt.push_back(row_prompt_[r]);
        next.push_back(row_next_[r]);
      }
    if (keep.empty()) return false;
    const bool compact =
        options_.batching.cuda_graphs ? 2 * keep.size() <= row_prompt_.size() : keep.size() < row_prompt_.size();
    if (compact) {
      cache_.keep_rows(keep);
#ifdef RHO_WITH_CUDA
      if (graphs_) graphs_->clear();  // the cache's tensors moved
#endif
      row_prompt_ = std::move(prompt);
      row_next_ = std::move(next);
    }
    return true;
  }

  // One new token for every row that holds a sequence; returns the rows whose sequence ended.
  std::vector<int64_t> step() {
    const auto ids = options_.batching.cuda_graphs ? fixed_step() : eager_step();
    if (options_.stats) ++options_.stats->steps;
    std::vector<int64_t> freed;
    for (size_t r = 0; r < row_prompt_.size(); ++r) {
      if (row_prompt_[r] < 0) continue;  // an idle row of a fixed-shape step
      if (accept(static_cast<size_t>(row_prompt_[r]), ids[r])) {
        row_next_[r] = ids[r];
      } else {
        row_prompt_[r] = -1;
        freed.push_back(static_cast<int64_t>(r));
      }
    }
    return freed;
  }

  std::vector<int64_t> eager_step() {
    const auto input = at::tensor(at::ArrayRef<int64_t>(row_next_), at::kLong).view({-1, 1}).to(device_);
    return choose(model_.hidden_states(input, &cache_).select(1, 0));
  }

  // A step whose shapes repeat (BatchDecoding::cuda_graphs): every row, idle ones given token 0 at column 0 (their
  // own row, which a new sequence overwrites), through a mask, reading the columns up to the longest row rounded up
  // to kKeyBucket. Replayed from a CUDA graph on CUDA, run eagerly elsewhere.
  static constexpr int64_t kKeyBucket = 128;
  std::vector<int64_t> fixed_step() {
    const size_t rows = row_prompt_.size();
    std::vector<int64_t> tokens(rows, 0), columns(rows, 0);
    int64_t longest = 0;
    for (size_t r = 0; r < rows; ++r)
      if (row_prompt_[r] >= 0) {
        tokens[r] = row_next_[r];
        columns[r] = cache_.row_lengths[r];
        longest = std::max(longest, columns[r]);
      }
    if (longest >= cache_.capacity)
      throw Error(fmt::format("greedy_generate: a row of the ragged cache is full ({} positions)", cache_.capacity));
    const int64_t keys = std::min(cache_.capacity, (longest + kKeyBucket) / kKeyBucket * kKeyBucket);
    std::vector<int64_t> ids;
#ifdef RHO_WITH_CUDA
    // Not with layer hooks (sharded parameters gather in them) or CUDA autocast (its weight copies are freed when
    // its scope ends, under a replay's feet).
    if (device_.is_cuda() && graphs_usable_ && !model_.layer_hooks && !at::autocast::is_autocast_enabled(at::kCUDA)) {
      if (!graphs_) graphs_ = std::make_unique<StepGraphs>(device_);
      try {
        ids = graphs_->run(model_, cache_, tokens, columns, keys, options_.vocab_limit, options_.stats);
      } catch (const StepGraphs::CaptureFailed& e) {  // a step that cannot be captured still decodes, eagerly
        std::cerr << "greedy_generate: CUDA graph capture failed, decoding without graphs: " << e.what() << "\n";
        graphs_usable_ = false;
        cache_.step_mask = at::Tensor();  // made in the capture, from the graphs' pool
        graphs_.reset();
      }
    }
#endif
    if (ids.empty()) {
      const auto t = at::tensor(at::ArrayRef<int64_t>(tokens), at::kLong).view({-1, 1}).to(device_);
      const auto c = at::tensor(at::ArrayRef<int64_t>(columns), at::kLong).to(device_);
      ids = choose(model_.ragged_step(t, c, keys, /*mask=*/true, cache_).select(1, 0));
    }
    for (size_t r = 0; r < rows; ++r)
      if (row_prompt_[r] >= 0) ++cache_.row_lengths[r];
    return ids;
  }

  LlamaImpl& model_;
  const std::vector<std::vector<int64_t>>& prompts_;
  const GenerateOptions& options_;
  const RowStop& stop_;
  std::vector<Generation> out_;
  const at::Device device_;
#ifdef RHO_WITH_CUDA
  // Declared before cache_, which goes first: its step mask may lie in the graphs' pool, emptied when they go.
  std::unique_ptr<StepGraphs> graphs_;  // made on the first fixed-shape step on CUDA
  bool graphs_usable_ = true;
#endif
  KVCache cache_;
  std::vector<int64_t> row_prompt_;  // the prompt each row's sequence continues; -1: none
  std::vector<int64_t> row_next_;    // the token each row is given at the next step
  size_t next_prompt_ = 0;           // prompts before it have been started
  int64_t shared_ = 0;               // tokens every prompt starts with, run once into prefix_
  KVCache prefix_;
};
}  // namespace

std::vector<Generation> greedy_generate_batch(
    LlamaImpl& model, const std::vector<std::vector<int64_t>>& prompts, const GenerateOptions& options,
    const std::function<bool(size_t prompt, const std::vector<int64_t>&)>& stop) {
  const int64_t max_pos = model.config.max_position_embeddings;
  if (options.max_new_tokens < 1) throw Error("greedy_generate: max_new_tokens must be at least 1");
  if (options.batching.batch_size < 0)
    throw Error("greedy_generate: batch_size must be >= 0 (0: every prompt at once)");
  if (options.batching.prefill_bucket < 0)
    throw Error("greedy_generate: prefill_bucket must be >= 0 (0: the device's default)");
  for (const auto& p : prompts) {
    if (p.empty()) throw Error("greedy_generate: a prompt is empty");
    if (static_cast<int64_t>(p.size()) >= max_pos)
      throw Error(fmt::format("greedy_generate: a prompt of {} tokens leaves no room under max_position_embeddings={}",
                              p.size(), max_pos));
  }
  c10::InferenceMode guard;
  return BatchDecoder(model, prompts, options, stop).run();
}

std::vector<TextGeneration> generate_texts(LlamaImpl& model, const TextTokenizer& tok,
                                           const std::vector<std::string>& prompts, const TextGenerateOptions& options) {
  const int64_t max_pos = model.config.max_position_embeddings, max_new = options.max_new_tokens;
  if (max_new < 1 || max_new >= max_pos)
    throw Error(fmt::format("max_new_tokens {} must be in [1, max_position_embeddings={})", max_new, max_pos));
  const bool bos = options.add_bos && tok.bos_id() >= 0;
  std::vector<TextGeneration> out(prompts.size());
  std::vector<std::vector<int64_t>> ids(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    if (bos) ids[i].push_back(tok.bos_id());
    const auto body = tok.encode(prompts[i]);
    ids[i].insert(ids[i].end(), body.begin(), body.end());
    const auto budget = static_cast<size_t>(max_pos - max_new);
    if (ids[i].size() > budget) {  // keep BOS and the end of the prompt, which holds the question
      const size_t front = bos ? 1 : 0;
      ids[i].erase(ids[i].begin() + front, ids[i].end() - (budget - front));
      out[i].truncated = true;
    }
    out[i].prompt_tokens = static_cast<int64_t>(ids[i].size());
  }
  auto stop_at = [&](const std::string& text) {  // the earliest stop string in the text
    size_t at = std::string::npos;
    for (const auto& s : options.stops)
      if (!s.empty()) at = std::min(at, text.find(s));
    return at;
  };
  GenerateOptions gen;
  gen.max_new_tokens = max_new;
  gen.eos_id = tok.eos_id();
  gen.vocab_limit = tok.vocab_size();
  gen.batching = options.batching;
  gen.on_finish = [&](size_t i, const Generation& g) {
    out[i].new_tokens = static_cast<int64_t>(g.ids.size());
    out[i].stop_reason = g.stop_reason;
    out[i].text = tok.decode(g.ids);
    if (const auto at = stop_at(out[i].text); at != std::string::npos) out[i].text.erase(at);
    if (options.on_finish) options.on_finish(i, out[i]);
  };
  greedy_generate_batch(model, ids, gen, [&](size_t, const std::vector<int64_t>& new_ids) {
    return stop_at(tok.decode(new_ids)) != std::string::npos;
  });
  return out;
}

TextGeneration generate_text(LlamaImpl& model, const TextTokenizer& tok, const std::string& prompt,
                             const TextGenerateOptions& options) {
  return generate_texts(model, tok, {prompt}, options)[0];
}

namespace {
// Appends to out[i], for each continuation i of `which` (two tokens or more each), log p of its tokens after the
// first: one pass after the prompt's keys and values (expand_rows), the rows right-padded (causal attention keeps
// each row's positions from its padding). Logits are made at the rows' own positions only.
void score_continuations(LlamaImpl& model, const KVCache& prompt_cache,
                         const std::vector<std::vector<int64_t>>& continuations, const std::vector<size_t>& which,
                         std::vector<std::vector<double>>& out) {
  const auto device = model.output_weight().device();
  const auto rows = static_cast<int64_t>(which.size());
  int64_t width = 0;
  for (const size_t i : which) width = std::max<int64_t>(width, static_cast<int64_t>(continuations[i].size()) - 1);
  auto inputs = at::zeros({rows, width}, at::kLong);
  std::vector<int64_t> positions, targets;  // flat positions r * width + j of the rows' own tokens, and their targets
  for (int64_t r = 0; r < rows; ++r) {
    const auto& c = continuations[which[r]];
    const auto n = static_cast<int64_t>(c.size()) - 1;
    inputs[r].narrow(0, 0, n).copy_(at::tensor(at::ArrayRef<int64_t>(c.data(), n), at::kLong));
    for (int64_t j = 0; j < n; ++j) positions.push_back(r * width + j), targets.push_back(c[j + 1]);
  }
  KVCache cache = expand_rows(prompt_cache, rows);
  const auto h = model.hidden_states(inputs.to(device), &cache);
  const auto own = h.reshape({-1, h.size(-1)}).index_select(0, at::tensor(positions, at::kLong).to(device));
  const auto logits = model.logits(own).to(at::kFloat);
  // log softmax at the targets only: the logit less the log-sum-exp of its row.
  const auto picked = (logits.gather(1, at::tensor(targets, at::kLong).to(device).unsqueeze(1)).squeeze(1) -
                       logits.logsumexp(1))
                          .to(at::kDouble)
                          .cpu();
  const double* p = picked.data_ptr<double>();
  for (const size_t i : which) {
    const auto n = continuations[i].size() - 1;
    out[i].insert(out[i].end(), p, p + n);
    p += n;
  }
}
}  // namespace

int64_t shared_prefix_length(const std::vector<std::vector<int64_t>>& prompts) {
  constexpr size_t kWorthIt = 16;
  if (prompts.size() < 2) return 0;
  size_t common = prompts[0].size();
  for (const auto& p : prompts) {
    if (p.empty()) return 0;
    common = std::min(common, p.size() - 1);
    size_t k = 0;
    while (k < common && p[k] == prompts[0][k]) ++k;
    common = k;
  }
  return common < kWorthIt ? 0 : static_cast<int64_t>(common);
}

KVCache prefill_cache(LlamaImpl& model, const std::vector<int64_t>& tokens) {
  c10::InferenceMode guard;
  KVCache cache;
  model.hidden_states(ids_tensor(tokens, model.output_weight().device()), &cache);
  return cache;
}

std::vector<std::vector<double>> continuation_logprobs(LlamaImpl& model, const std::vector<int64_t>& prompt,
                                                       const std::vector<std::vector<int64_t>>& continuations,
                                                       const KVCache* shared, int64_t pass_positions) {
  const int64_t max_pos = model.config.max_position_embeddings;
  if (prompt.empty()) throw Error("continuation_logprobs: the prompt is empty");
  const int64_t skip = shared ? shared->length() : 0;
  if (skip >= static_cast<int64_t>(prompt.size()))
    throw Error(fmt::format("continuation_logprobs: the shared prefix ({} tokens) leaves nothing of the prompt ({})",
                            skip, prompt.size()));
  for (const auto& c : continuations)
    if (static_cast<int64_t>(prompt.size() + c.size()) - 1 > max_pos)
      throw Error(fmt::format("continuation_logprobs: {} positions exceed max_position_embeddings={}",
                              prompt.size() + c.size() - 1, max_pos));
  c10::InferenceMode guard;
  const auto device = model.output_weight().device();
  KVCache prompt_cache;
  if (shared) prompt_cache = *shared;  // grown by concatenation: the shared cache itself is left as it is
  const std::vector<int64_t> own(prompt.begin() + skip, prompt.end());
  auto h = model.hidden_states(ids_tensor(own, device), &prompt_cache);
  const auto first = at::log_softmax(model.logits(h.select(1, h.size(1) - 1)).to(at::kFloat), -1).squeeze(0).cpu();
  std::vector<std::vector<double>> out(continuations.size());
  std::vector<size_t> longer;  // continuations of two tokens or more
  for (size_t i = 0; i < continuations.size(); ++i) {
    const auto& c = continuations[i];
    if (!c.empty()) out[i].push_back(first[c[0]].item<double>());
    if (c.size() > 1) longer.push_back(i);
  }
  // The longer ones in passes of at most pass_positions cached positions, at least one row a pass.
  const auto prompt_positions = static_cast<int64_t>(prompt.size());
  std::vector<size_t> pass;
  int64_t pass_width = 0;  // the pass's longest row
  for (const size_t i : longer) {
    const int64_t n = static_cast<int64_t>(continuations[i].size()) - 1;
    const int64_t rows = static_cast<int64_t>(pass.size()) + 1;
    if (!pass.empty() && rows * (prompt_positions + std::max(pass_width, n)) > pass_positions) {
      score_continuations(model, prompt_cache, continuations, pass, out);
      pass.clear();
      pass_width = 0;
    }
    pass.push_back(i);
    pass_width = std::max(pass_width, n);
  }
  if (!pass.empty()) score_continuations(model, prompt_cache, continuations, pass, out);
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
