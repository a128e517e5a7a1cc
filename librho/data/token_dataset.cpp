#include "librho/data/token_dataset.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/ones_like.h>
#include <ATen/Context.h>
#include <ATen/ops/empty.h>
#include <fmt/format.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <filesystem>
#include <mutex>
#include <nlohmann/json.hpp>
#include <numeric>
#include <set>
#include <thread>

#include "librho/util/error.h"
#include "librho/util/json_fields.h"
#include "librho/util/files.h"
#include "librho/util/sha256.h"

namespace rho {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {


uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// A permutation of [0, n) that depends only on (seed, epoch): Fisher-Yates driven by splitmix64.
std::vector<uint32_t> epoch_permutation(uint64_t seed, int64_t epoch, int64_t n) {
  uint64_t mix = seed;
  uint64_t state = splitmix64(mix);
  mix = static_cast<uint64_t>(epoch);
  state ^= splitmix64(mix);
  std::vector<uint32_t> p(static_cast<size_t>(n));
  std::iota(p.begin(), p.end(), 0u);
  for (int64_t i = n - 1; i > 0; --i) {
    // Multiply-shift maps a 64-bit draw onto [0, i]; its bias (below 2^-32 here) does not matter for shuffling.
    const auto j = static_cast<int64_t>((static_cast<unsigned __int128>(splitmix64(state)) * uint64_t(i + 1)) >> 64);
    std::swap(p[static_cast<size_t>(i)], p[static_cast<size_t>(j)]);
  }
  return p;
}

}  // namespace

TokenDataset TokenDataset::open(const std::string& dir, bool verify_checksums) {
  const auto manifest_path = (fs::path(dir) / "manifest.json").string();
  if (!fs::exists(manifest_path))
    throw Error(fmt::format("{}: no manifest.json (not a token dataset, or rho_tokenize has not finished it)", dir));
  const auto text = read_text_file(manifest_path);
  TokenDataset d;
  d.dir_ = dir;
  d.manifest_ = TokenManifest::from_json(text, manifest_path);
  d.hash_ = sha256_hex(text);
  d.elem_bytes_ = d.manifest_.dtype == "uint16" ? 2 : 4;
  for (const auto& s : d.manifest_.shards) {
    const auto path = (fs::path(dir) / s.file).string();
    auto map = MappedFile::open(path);
    const uint64_t expected = static_cast<uint64_t>(s.num_tokens) * static_cast<uint64_t>(d.elem_bytes_);
    if (map->size() != expected)
      throw Error(fmt::format("{}: {} bytes, but manifest.json gives {} {} tokens ({} bytes): truncated or not this "
                              "dataset's shard",
                              path, map->size(), s.num_tokens, d.manifest_.dtype, expected));
    d.starts_.push_back(d.total_);
    d.total_ += s.num_tokens;
    d.maps_.push_back(std::move(map));
  }
  d.starts_.push_back(d.total_);
  d.verified_ = std::make_shared<std::vector<std::once_flag>>(d.maps_.size());
  if (verify_checksums)
    for (size_t s = 0; s < d.maps_.size(); ++s) d.verify_shard(s);
  return d;
}

void TokenDataset::verify_shard(size_t s) const {
  // A throwing call leaves the flag unset: every later read of the shard fails the same way.
  std::call_once((*verified_)[s], [&] {
    const auto& info = manifest_.shards[s];
    const auto sha = sha256_hex(maps_[s]->data(), maps_[s]->size());
    if (sha != info.sha256)
      throw Error(fmt::format("{}: sha256 {} differs from manifest.json's {} (corrupt shard)", maps_[s]->path(), sha,
                              info.sha256));
  });
}

void TokenDataset::read(int64_t start, int64_t length, int64_t* out) const {
  if (start < 0 || length < 0 || start + length > total_)
    throw Error(fmt::format("{}: tokens [{}, {}) are outside the dataset's {} tokens", dir_, start, start + length,
                            total_));
  size_t s = static_cast<size_t>(std::upper_bound(starts_.begin(), starts_.end(), start) - starts_.begin()) - 1;
  while (length > 0) {
    verify_shard(s);
    const int64_t offset = start - starts_[s];
    const int64_t n = std::min(length, starts_[s + 1] - start);
    const uint8_t* p = maps_[s]->data() + offset * elem_bytes_;
    if (elem_bytes_ == 2) {
      for (int64_t i = 0; i < n; ++i) {
        uint16_t v;
        std::memcpy(&v, p + 2 * i, 2);
        out[i] = v;
      }
    } else {
      for (int64_t i = 0; i < n; ++i) {
        uint32_t v;
        std::memcpy(&v, p + 4 * i, 4);
        out[i] = v;
      }
    }
    out += n;
    start += n;
    length -= n;
    ++s;
  }
}

at::Tensor TokenDataset::slice(int64_t start, int64_t length) const {
  at::Tensor t = at::empty({length}, at::kLong);
  read(start, length, t.data_ptr<int64_t>());
  return t;
}

at::Tensor TokenDataset::shard_tokens(size_t s) const {
  if (s >= maps_.size()) throw Error(fmt::format("{}: no shard {} (it has {})", dir_, s, maps_.size()));
  return slice(starts_[s], starts_[s + 1] - starts_[s]);
}

// Permutations are recomputed per epoch; the two most recent are kept (a step may straddle an epoch boundary).
struct BatchLoader::Permutations {
  std::mutex m;
  std::deque<std::pair<int64_t, std::shared_ptr<const std::vector<uint32_t>>>> cache;
};

struct BatchLoader::Prefetcher {
  std::mutex m;
  std::condition_variable cv;
  std::deque<Batch> queue;
  int64_t next_step = 0;    // the step the thread makes next
  uint64_t generation = 0;  // bumped by seek(): batches made for an older generation are dropped
  bool stop = false;
  std::exception_ptr error;
  std::thread thread;
};

BatchLoader::BatchLoader(std::shared_ptr<const TokenDataset> data, LoaderOptions options)
    : data_(std::move(data)), opt_(options), perms_(std::make_unique<Permutations>()) {
  if (!data_) throw Error("BatchLoader: no dataset");
  if (opt_.seq_len < 1 || opt_.batch_size < 1)
    throw Error(fmt::format("BatchLoader: seq_len ({}) and batch_size ({}) must be positive", opt_.seq_len,
                            opt_.batch_size));
  if (opt_.world_size < 1 || opt_.rank < 0 || opt_.rank >= opt_.world_size)
    throw Error(fmt::format("BatchLoader: rank {} is not in a world of {}", opt_.rank, opt_.world_size));
  const int64_t w = windows_per_epoch();
  if (w < 1)
    throw Error(fmt::format("{}: {} tokens are too few for one window of seq_len + 1 = {}", data_->dir(),
                            data_->num_tokens(), opt_.seq_len + 1));
  if (w > int64_t(UINT32_MAX))
    throw Error(fmt::format("{}: {} windows per epoch are too many; use a longer seq_len", data_->dir(), w));
}

BatchLoader::~BatchLoader() {
  if (!prefetcher_) return;
  {
    std::lock_guard<std::mutex> l(prefetcher_->m);
    prefetcher_->stop = true;
  }
  prefetcher_->cv.notify_all();
  prefetcher_->thread.join();
}

int64_t BatchLoader::windows_per_epoch() const { return (data_->num_tokens() - 1) / opt_.seq_len; }

int64_t BatchLoader::step() const { return step_; }

std::shared_ptr<const std::vector<uint32_t>> BatchLoader::permutation(int64_t epoch) const {
  std::lock_guard<std::mutex> l(perms_->m);
  for (const auto& [e, p] : perms_->cache)
    if (e == epoch) return p;
  auto p = std::make_shared<const std::vector<uint32_t>>(epoch_permutation(opt_.seed, epoch, windows_per_epoch()));
  perms_->cache.emplace_back(epoch, p);
  if (perms_->cache.size() > 2) perms_->cache.pop_front();
  return p;
}

Batch BatchLoader::make_batch(int64_t step) const {
  if (step < 0) throw Error(fmt::format("BatchLoader: step {} is negative", step));
  const int64_t b_size = opt_.batch_size, len = opt_.seq_len + 1, windows = windows_per_epoch();
  auto opts = at::TensorOptions().dtype(at::kLong);
  if (opt_.pin_memory && at::hasCUDA()) opts = opts.pinned_memory(true);
  Batch b;
  b.step = step;
  b.tokens = at::empty({b_size, len}, opts);
  b.positions = at::empty({b_size, len}, opts);
  int64_t* tok = b.tokens.data_ptr<int64_t>();
  int64_t* pos = b.positions.data_ptr<int64_t>();
  const int64_t first = (step * opt_.world_size + opt_.rank) * b_size;  // this rank's first stream index
  std::shared_ptr<const std::vector<uint32_t>> perm;
  int64_t perm_epoch = -1;
  for (int64_t row = 0; row < b_size; ++row) {
    const int64_t i = first + row, epoch = i / windows;
    if (epoch != perm_epoch) {
      perm = permutation(epoch);
      perm_epoch = epoch;
    }
    const int64_t start = int64_t((*perm)[static_cast<size_t>(i % windows)]) * opt_.seq_len;
    data_->read(start, len, tok + row * len);
    for (int64_t k = 0; k < len; ++k) pos[row * len + k] = start + k;
  }
  return b;
}

Batch BatchLoader::next() {
  if (opt_.prefetch <= 0) return make_batch(step_++);
  if (!prefetcher_) {  // started on first use, so that a seek() right after construction costs nothing
    prefetcher_ = std::make_unique<Prefetcher>();
    prefetcher_->next_step = step_;
    Prefetcher* p = prefetcher_.get();
    p->thread = std::thread([this, p] {
      for (;;) {
        int64_t step;
        uint64_t generation;
        {
          std::unique_lock<std::mutex> l(p->m);
          p->cv.wait(l, [&] { return p->stop || (!p->error && p->queue.size() < size_t(opt_.prefetch)); });
          if (p->stop) return;
          step = p->next_step;
          generation = p->generation;
        }
        Batch b;
        std::exception_ptr error;
        try {
          b = make_batch(step);
        } catch (...) {
          error = std::current_exception();
        }
        {
          std::lock_guard<std::mutex> l(p->m);
          if (generation != p->generation) continue;
          if (error) {
            p->error = error;
          } else {
            p->queue.push_back(std::move(b));
            ++p->next_step;
          }
        }
        p->cv.notify_all();
      }
    });
  }
  Prefetcher* p = prefetcher_.get();
  std::unique_lock<std::mutex> l(p->m);
  p->cv.wait(l, [&] { return !p->queue.empty() || p->error; });
  if (p->queue.empty()) std::rethrow_exception(p->error);
  Batch b = std::move(p->queue.front());
  p->queue.pop_front();
  ++step_;
  l.unlock();
  p->cv.notify_all();
  return b;
}

void BatchLoader::seek(int64_t step) {
  if (step < 0) throw Error(fmt::format("BatchLoader: cannot seek to step {}", step));
  step_ = step;
  if (!prefetcher_) return;
  {
    std::lock_guard<std::mutex> l(prefetcher_->m);
    ++prefetcher_->generation;
    prefetcher_->queue.clear();
    prefetcher_->next_step = step;
    prefetcher_->error = nullptr;
  }
  prefetcher_->cv.notify_all();
}

at::Tensor valid_targets(const at::Tensor& inputs, int64_t eos_id, bool exclude_boundary) {
  if (exclude_boundary && eos_id >= 0) return inputs != eos_id;
  return at::ones_like(inputs, inputs.options().dtype(at::kBool));
}

}  // namespace rho
