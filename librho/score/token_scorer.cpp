#include "librho/score/token_scorer.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/stack.h>
#include <c10/core/InferenceMode.h>
#include <c10/util/BFloat16.h>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <utility>
#include <nlohmann/json.hpp>

#include "librho/model/autocast.h"
#include "librho/util/enum_names.h"
#include "librho/util/error.h"
#include "librho/util/json_fields.h"
#include "librho/util/files.h"
#include "librho/util/progress.h"
#include "librho/util/sha256.h"

namespace rho {
namespace fs = std::filesystem;

namespace {
constexpr const char* kFormat = "librho-losses";

int dtype_bytes(const std::string& dtype, const std::string& source) {
  if (dtype == "float32") return 4;
  if (dtype == "bfloat16") return 2;
  throw Error(fmt::format("{}: dtype '{}' is not float32 or bfloat16", source, dtype));
}

std::string loss_shard_name(size_t s) { return fmt::format("losses-{:05d}.bin", s); }
}  // namespace

std::string LossManifest::to_json() const {
  nlohmann::ordered_json j;
  j["format"] = kFormat;
  j["format_version"] = format_version;
  j["dtype"] = dtype;
  j["token_dataset_hash"] = token_dataset_hash;
  j["tokenizer_sha256"] = tokenizer_sha256;
  j["model_hash"] = model_hash;
  j["precision"] = precision;
  j["seq_len"] = seq_len;
  j["stride"] = stride;
  j["shards"] = nlohmann::ordered_json::array();
  for (const auto& s : shards) j["shards"].push_back({{"file", s.file}, {"num_tokens", s.num_tokens}, {"sha256", s.sha256}});
  return j.dump(2) + "\n";
}

LossManifest LossManifest::from_json(const std::string& text, const std::string& source) {
  const JsonFields r{source};
  const auto j = r.parse_object(text);
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  r.only(j, {"format", "format_version", "dtype", "token_dataset_hash", "tokenizer_sha256", "model_hash", "precision",
             "seq_len", "stride", "shards"},
         "");
  if (r.string(j, "format", "format") != kFormat) throw r.error("format", fmt::format("is not \"{}\"", kFormat));
  LossManifest m;
  const int64_t version = r.integer(j, "format_version", "format_version", 0, kMax);
  if (version != 1) throw r.error("format_version", fmt::format("version {} is not supported (1)", version));
  m.dtype = r.string(j, "dtype", "dtype");
  dtype_bytes(m.dtype, source);
  m.token_dataset_hash = r.sha(j, "token_dataset_hash", "token_dataset_hash");
  m.tokenizer_sha256 = r.sha(j, "tokenizer_sha256", "tokenizer_sha256");
  m.model_hash = r.string(j, "model_hash", "model_hash");  // the scorer's identifier of the model (rho_score: its sha256)
  if (j.contains("precision")) m.precision = r.string(j, "precision", "precision");  // absent: older manifests
  m.seq_len = r.integer(j, "seq_len", "seq_len", 1, kMax);
  m.stride = r.integer(j, "stride", "stride", 1, kMax);
  const auto& shards = r.at(j, "shards", "shards");
  if (!shards.is_array()) throw r.error("shards", "expected an array");
  for (size_t i = 0; i < shards.size(); ++i) {
    const std::string where = fmt::format("shards[{}]", i);
    const auto& s = shards[i];
    if (!s.is_object()) throw r.error(where, "expected an object");
    r.only(s, {"file", "num_tokens", "sha256"}, where);
    ShardInfo info;
    info.file = r.string(s, "file", where + ".file");
    if (info.file.empty() || info.file.find('/') != std::string::npos)
      throw r.error(where + ".file", fmt::format("'{}' is not a file name inside the folder", info.file));
    info.num_tokens = r.integer(s, "num_tokens", where + ".num_tokens", 0, kMax);
    info.sha256 = r.sha(s, "sha256", where + ".sha256");
    m.shards.push_back(info);
  }
  return m;
}

LossDataset LossDataset::open(const std::string& dir) {
  LossDataset d;
  d.dir_ = dir;
  const auto path = (fs::path(dir) / "manifest.json").string();
  if (!fs::exists(path)) throw Error(fmt::format("{}: missing (scoring unfinished, or not a loss dataset)", path));
  d.manifest_ = LossManifest::from_json(read_text_file(path), path);
  const int bytes = dtype_bytes(d.manifest_.dtype, path);
  d.starts_.push_back(0);
  for (const auto& s : d.manifest_.shards) {
    const auto file = (fs::path(dir) / s.file).string();
    auto map = MappedFile::open(file);
    if (map->size() != static_cast<size_t>(s.num_tokens) * bytes)
      throw Error(fmt::format("{}: {} bytes, but the manifest says {} tokens of {} (truncated?)", file, map->size(),
                              s.num_tokens, d.manifest_.dtype));
    // Every loss is read by whoever opens these (SLM selection, the view): a flipped byte must not pass silently.
    const auto sha = sha256_hex(map->data(), map->size());
    if (sha != s.sha256)
      throw Error(fmt::format("{}: sha256 {} differs from manifest.json's {} (corrupt loss shard)", file, sha, s.sha256));
    d.maps_.push_back(map);
    d.starts_.push_back(d.starts_.back() + s.num_tokens);
  }
  return d;
}

void LossDataset::check_matches(const TokenDataset& tokens) const {
  // The tokenizer first: another tokenizer also means another dataset, and this message says more.
  if (manifest_.tokenizer_sha256 != tokens.manifest().tokenizer_sha256)
    throw Error(fmt::format("{}: reference losses come from tokenizer {} but {} uses {}", dir_,
                            manifest_.tokenizer_sha256.substr(0, 12), tokens.dir(),
                            tokens.manifest().tokenizer_sha256.substr(0, 12)));
  if (manifest_.token_dataset_hash != tokens.hash())
    throw Error(fmt::format("{}: reference losses were scored on token dataset {} but {} is {} (re-run rho_score)",
                            dir_, manifest_.token_dataset_hash.substr(0, 12), tokens.dir(), tokens.hash().substr(0, 12)));
  if (num_tokens() != tokens.num_tokens())
    throw Error(fmt::format("{}: {} losses for {} tokens", dir_, num_tokens(), tokens.num_tokens()));
}

at::Tensor LossDataset::gather(const at::Tensor& positions) const {
  const auto pos = positions.to(at::kLong).contiguous();
  at::Tensor out = at::empty(pos.sizes(), at::kFloat);
  const int64_t* p = pos.data_ptr<int64_t>();
  float* o = out.data_ptr<float>();
  const bool bf16 = manifest_.dtype == "bfloat16";
  for (int64_t i = 0; i < pos.numel(); ++i) {
    TORCH_CHECK(p[i] >= 0 && p[i] < num_tokens(), "position ", p[i], " outside the loss dataset");
    const size_t s = std::upper_bound(starts_.begin(), starts_.end(), p[i]) - starts_.begin() - 1;
    const int64_t j = p[i] - starts_[s];
    if (bf16) {
      c10::BFloat16 v;
      std::memcpy(&v, maps_[s]->data() + j * 2, 2);
      o[i] = static_cast<float>(v);
    } else {
      std::memcpy(&o[i], maps_[s]->data() + j * 4, 4);
    }
  }
  return out;
}

at::Tensor LossDataset::shard_losses(size_t s) const {
  const int64_t n = manifest_.shards[s].num_tokens;
  const auto arange_pos = at::empty({n}, at::kLong);
  int64_t* p = arange_pos.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) p[i] = starts_[s] + i;
  return gather(arange_pos);
}

std::string ScoreSummary::to_string() const {
  std::string s = fmt::format("scored {} tokens ({} shards scored, {} already done); mean loss {:.4f}\n", tokens,
                              shards_scored, shards_skipped, tokens ? loss_sum / tokens : 0.0);
  const int64_t peak = histogram.empty() ? 0 : *std::max_element(histogram.begin(), histogram.end());
  for (size_t b = 0; b < histogram.size(); ++b) {
    const auto label = b + 1 < histogram.size() ? fmt::format("[{:2d},{:2d})", b, b + 1) : fmt::format(">= {:2d}  ", b);
    const int bar = peak ? static_cast<int>(40.0 * histogram[b] / peak) : 0;
    s += fmt::format("  loss {} {:>12} {}\n", label, histogram[b], std::string(bar, '#'));
  }
  return s;
}

TokenScorer::TokenScorer(Llama model, std::string model_hash, ScoreOptions options)
    : model_(std::move(model)), model_hash_(std::move(model_hash)), opt_(std::move(options)) {
  if (opt_.stride <= 0) opt_.stride = opt_.seq_len;
  if (opt_.stride > opt_.seq_len)
    throw Error(fmt::format("score.stride {} must not exceed score.seq_len {}", opt_.stride, opt_.seq_len));
  if (opt_.world_size < 1 || opt_.rank < 0 || opt_.rank >= opt_.world_size)
    throw Error(fmt::format("rank {} / world size {} is not a valid split", opt_.rank, opt_.world_size));
  dtype_bytes(opt_.dtype, "score.dtype");
  if (opt_.precision == ScorePrecision::Auto) opt_.precision = precision_of(*model_);
  model_->eval();
}

ScorePrecision precision_of(const LlamaImpl& model) {
  // The embedding stays fp32 under the autocast recipe; a projection's dtype tells the rest.
  const auto embed = model.embed_tokens->weight.scalar_type();
  const auto proj = model.layers->size() ? model.layers->at<DecoderLayerImpl>(0).self_attn->q_proj->weight.scalar_type()
                                         : model.output_weight().scalar_type();
  if (embed == at::kFloat && proj == at::kBFloat16) return ScorePrecision::Autocast;
  return embed == at::kBFloat16 ? ScorePrecision::BF16 : ScorePrecision::FP32;
}

namespace {
const std::pair<ScorePrecision, const char*> kPrecisions[] = {{ScorePrecision::Auto, "auto"},
                                                               {ScorePrecision::Autocast, "autocast"},
                                                               {ScorePrecision::BF16, "bf16"},
                                                               {ScorePrecision::FP32, "fp32"}};
}  // namespace

ScorePrecision parse_score_precision(const std::string& s) {
  if (const auto p = enum_from_name(kPrecisions, s)) return *p;
  throw Error(fmt::format("score precision '{}' is not one of {}", s, enum_names(kPrecisions)));
}

std::string to_string(ScorePrecision p) { return enum_name(kPrecisions, p); }

ScorePrecision prepare_scoring_model(LlamaImpl& model, const at::Device& device, ScorePrecision precision) {
  if (precision == ScorePrecision::Auto)
    precision = device.is_cuda() ? ScorePrecision::Autocast : ScorePrecision::FP32;
  if (precision == ScorePrecision::BF16) {
    model.to(device, at::kBFloat16);
    return precision;
  }
  model.to(device, at::kFloat);
  if (precision == ScorePrecision::Autocast) {
    // The matmul weights as autocast casts them (round to nearest even); embeddings (a tied LM head too) and
    // norm weights stay fp32, as in training.
    at::NoGradGuard no_grad;
    for (auto& item : model.named_parameters())
      if (item.value().dim() == 2 && item.key().find("embed_tokens") == std::string::npos)
        item.value().set_data(item.value().to(at::kBFloat16));
  }
  return precision;
}

at::Tensor TokenScorer::score_windows(const at::Tensor& windows) {
  c10::InferenceMode guard;
  const auto dev = model_->output_weight().device();
  const AutocastScope autocast(dev.type(), at::kBFloat16, opt_.precision == ScorePrecision::Autocast);
  auto w = windows.to(dev);
  const int64_t len = w.size(1) - 1;
  auto loss = model_->token_loss(w.narrow(1, 0, len), w.narrow(1, 1, len), opt_.rows_per_chunk);
  return loss.to(at::kCPU, at::kFloat);
}

void TokenScorer::check_can_score(const TokenDataset& data) const {
  const auto& c = model_->config;
  if (data.manifest().vocab_size > c.vocab_size)
    throw Error(fmt::format("{}: tokenizer vocabulary {} exceeds the model's vocab_size {} (tokens from another "
                            "tokenizer?)", data.dir(), data.manifest().vocab_size, c.vocab_size));
  if (opt_.seq_len > c.max_position_embeddings)
    throw Error(fmt::format("score seq_len {} exceeds the model's max_position_embeddings {}", opt_.seq_len,
                            c.max_position_embeddings));
}

at::Tensor TokenScorer::score_range(const TokenDataset& data, int64_t begin, int64_t end) {
  check_can_score(data);
  const int64_t n = data.num_tokens(), T = opt_.seq_len, S = opt_.stride;
  at::Tensor out = at::full({end - begin}, std::numeric_limits<float>::quiet_NaN(), at::kFloat);
  float* o = out.data_ptr<float>();
  const int64_t first = std::max<int64_t>(begin, 1), last = std::min(end, n) - 1;  // targets to score
  if (first > last) return out;
  auto window_of = [&](int64_t p) { return p <= T ? 0 : (p - T + S - 1) / S; };
  // Window k holds tokens [kS, kS+T] and scores targets (kS+T-S, kS+T] (k = 0: [1, T]).
  auto flush = [&](const std::vector<int64_t>& ks) {
    if (ks.empty()) return;
    const int64_t len = std::min(ks.front() * S + T, n - 1) - ks.front() * S;  // same for all but the final window
    std::vector<at::Tensor> rows;
    for (int64_t k : ks) rows.push_back(data.slice(k * S, len + 1));
    auto losses = score_windows(at::stack(rows));
    const float* l = losses.data_ptr<float>();
    for (size_t r = 0; r < ks.size(); ++r) {
      const int64_t start = ks[r] * S;
      const int64_t lo = std::max(ks[r] == 0 ? 1 : start + T - S + 1, first);
      const int64_t hi = std::min(start + len, last);
      for (int64_t p = lo; p <= hi; ++p) o[p - begin] = l[r * len + (p - start - 1)];
    }
  };
  std::vector<int64_t> batch;
  for (int64_t k = window_of(first); k <= window_of(last); ++k) {
    const bool full = k * S + T <= n - 1;
    if (!full || static_cast<int64_t>(batch.size()) == opt_.batch_size) {
      flush(batch);
      batch.clear();
    }
    batch.push_back(k);
    if (!full) {  // the final, shorter window goes alone
      flush(batch);
      batch.clear();
    }
  }
  flush(batch);
  return out;
}

struct LossShardRecord {
  std::string token_shard_sha256, model_hash, dtype, precision, sha256;
  int64_t seq_len = 0, stride = 0, num_tokens = 0;
  // A record from before `precision` was recorded does not match (its shard is scored again).
  nlohmann::json to_json() const {
    return {{"token_shard_sha256", token_shard_sha256}, {"model_hash", model_hash}, {"dtype", dtype},
            {"precision", precision}, {"seq_len", seq_len}, {"stride", stride}, {"num_tokens", num_tokens},
            {"sha256", sha256}};
  }
};

namespace {

// A finished shard: its record matches what we would write and its bytes hash to the recorded value.
bool shard_done(const std::string& bin, const std::string& rec_path, const LossShardRecord& want) {
  if (!fs::exists(bin) || !fs::exists(rec_path)) return false;
  nlohmann::json rec;
  try {
    rec = nlohmann::json::parse(read_text_file(rec_path));
  } catch (const nlohmann::json::exception&) {
    return false;
  }
  auto mine = want.to_json();
  mine["sha256"] = rec.value("sha256", "");
  return rec == mine && sha256_file(bin) == rec["sha256"].get<std::string>();
}
}  // namespace

namespace {
// The losses of a finished shard, read back as float32.
at::Tensor read_loss_shard(const std::string& bin, const LossShardRecord& rec) {
  auto map = MappedFile::open(bin);
  auto* bytes = const_cast<uint8_t*>(map->data());
  return rec.dtype == "float32" ? at::from_blob(bytes, {rec.num_tokens}, at::kFloat).clone()
                                : at::from_blob(bytes, {rec.num_tokens}, at::kBFloat16).to(at::kFloat);
}

// A manifest from an earlier scoring (another model, say) would list old bytes of the shards being replaced: it
// goes before the first shard is replaced, so a reader never sees a manifest over a mix of old and new shards.
void drop_old_manifest(const std::string& out_dir) {
  const auto old_manifest = fs::path(out_dir) / "manifest.json";
  if (!fs::exists(old_manifest)) return;
  fs::remove(old_manifest);
  fsync_dir(out_dir);
}

// Tokens, loss sum and histogram (1-nat bins, the last one 12 and above) of the finite losses.
void add_to_summary(const at::Tensor& losses, ScoreSummary& sum) {
  auto finite = losses.masked_select(losses == losses);
  sum.tokens += finite.numel();
  sum.loss_sum += finite.sum().item<double>();
  auto bins = finite.clamp(0, 12).floor().to(at::kLong).bincount({}, 13);
  for (int b = 0; b < 13; ++b) sum.histogram[b] += bins[b].item<int64_t>();
}
}  // namespace

LossShardRecord TokenScorer::record_for(const ShardInfo& shard) const {
  LossShardRecord r;
  r.token_shard_sha256 = shard.sha256;
  r.model_hash = model_hash_;
  r.dtype = opt_.dtype;
  r.precision = to_string(opt_.precision);
  r.seq_len = opt_.seq_len;
  r.stride = opt_.stride;
  r.num_tokens = shard.num_tokens;
  return r;
}

// Scores token shard s into `bin` (and its record), in pieces so the progress line moves and memory stays
// bounded on huge shards; returns its losses as float32 (rounded as stored).
at::Tensor TokenScorer::score_shard(const TokenDataset& data, size_t s, const std::string& bin, LossShardRecord& rec,
                                    const std::function<void(int64_t)>& progress) {
  const int64_t start = data.shard_start(s);
  const int64_t piece = std::max<int64_t>(opt_.seq_len * opt_.batch_size * 8, 1);
  std::vector<at::Tensor> parts;
  for (int64_t b = start; b < start + rec.num_tokens; b += piece) {
    const int64_t e = std::min(b + piece, start + rec.num_tokens);
    parts.push_back(score_range(data, b, e));
    progress(e - start);
  }
  const auto losses = parts.empty() ? at::empty({0}, at::kFloat) : at::cat(parts);
  const at::Tensor stored = opt_.dtype == "float32" ? losses.contiguous() : losses.to(at::kBFloat16).contiguous();
  const size_t nbytes = stored.numel() * stored.element_size();
  rec.sha256 = sha256_hex(stored.data_ptr(), nbytes);
  write_file_atomic(bin, stored.data_ptr(), nbytes);
  write_file_atomic(bin + ".json", rec.to_json().dump(2) + "\n");
  return opt_.dtype == "float32" ? losses : stored.to(at::kFloat);
}

ScoreSummary TokenScorer::score_dataset(const TokenDataset& data, const std::string& out_dir) {
  check_can_score(data);  // before anything is created
  fs::create_directories(out_dir);
  const auto& shards = data.manifest().shards;
  ScoreSummary sum;
  sum.histogram.assign(13, 0);
  int64_t my_tokens = 0, done_tokens = 0;
  for (size_t s = opt_.rank; s < shards.size(); s += opt_.world_size) my_tokens += shards[s].num_tokens;
  Progress progress(fmt::format("score[rank {}]", opt_.rank), my_tokens, "tok");
  bool manifest_dropped = false;
  for (size_t s = opt_.rank; s < shards.size(); s += opt_.world_size) {
    const auto bin = (fs::path(out_dir) / loss_shard_name(s)).string();
    auto rec = record_for(shards[s]);
    at::Tensor losses;
    if (shard_done(bin, bin + ".json", rec)) {
      ++sum.shards_skipped;
      losses = read_loss_shard(bin, rec);
    } else {
      if (!std::exchange(manifest_dropped, true)) drop_old_manifest(out_dir);
      losses = score_shard(data, s, bin, rec, [&](int64_t done_in_shard) {
        progress.update(done_tokens + done_in_shard, fmt::format("shard {}/{}", s + 1, shards.size()));
      });
      ++sum.shards_scored;
      if (opt_.on_shard_committed) opt_.on_shard_committed(sum.shards_scored);
    }
    done_tokens += rec.num_tokens;
    add_to_summary(losses, sum);
  }
  if (opt_.progress) progress.finish();
  sum.manifest_written = write_manifest_if_complete(data, out_dir);
  return sum;
}

// Whoever finds every shard finished writes the manifest (its content does not depend on who writes it).
bool TokenScorer::write_manifest_if_complete(const TokenDataset& data, const std::string& out_dir) const {
  const auto& shards = data.manifest().shards;
  LossManifest m;
  m.dtype = opt_.dtype;
  m.precision = to_string(opt_.precision);
  m.token_dataset_hash = data.hash();
  m.tokenizer_sha256 = data.manifest().tokenizer_sha256;
  m.model_hash = model_hash_;
  m.seq_len = opt_.seq_len;
  m.stride = opt_.stride;
  for (size_t s = 0; s < shards.size(); ++s) {
    const auto rec_path = (fs::path(out_dir) / loss_shard_name(s)).string() + ".json";
    if (!fs::exists(rec_path)) return false;  // another rank is still at work
    const auto rec = nlohmann::json::parse(read_text_file(rec_path));
    if (rec.value("model_hash", "") != model_hash_ || rec.value("token_shard_sha256", "") != shards[s].sha256)
      return false;
    m.shards.push_back({loss_shard_name(s), shards[s].num_tokens, 0, rec["sha256"].get<std::string>()});
  }
  write_file_atomic((fs::path(out_dir) / "manifest.json").string(), m.to_json());
  return true;
}

}  // namespace rho
