#include "librho/data/tokenize.h"

#include "librho/data/shard_writer.h"

#include "librho/data/hf_tokenizer.h"
#include "librho/data/tokenizer.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sentencepiece_trainer.h>
#include <sys/file.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <limits>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "librho/util/cpus.h"
#include "librho/util/error.h"
#include "librho/util/json_fields.h"
#include "librho/util/files.h"
#include "librho/util/progress.h"
#include "librho/util/sha256.h"

namespace rho {
namespace fs = std::filesystem;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

constexpr int kProgressVersion = 1;
constexpr size_t kChunkBytes = 256 << 10;  // input per work item: amortises locking, keeps progress smooth
constexpr size_t kChunkRecords = 8192;
constexpr int kMaxWarnings = 10;         // skipped records printed one by one before only being counted
const char* kManifest = "manifest.json";
const char* kProgress = "progress.json";
const char* kTrainedName = "tokenizer.model";
const char* kHfConfigName = "tokenizer_config.json";  // beside a tokenizer.json: its BOS/EOS tokens


// Where the output continues after a shard: the next record to read, how many tokens of it are already
// written (a document may straddle shards), and the skip counts so far.
struct ResumePoint {
  CorpusPosition pos;
  int64_t doc_tokens_done = 0;
  int64_t skipped_documents = 0, skipped_files = 0;
};

struct ShardRecord {
  ShardInfo info;
  ResumePoint next;
};

json shard_record_json(const ShardRecord& r) {
  return {{"file", r.info.file},
          {"num_tokens", r.info.num_tokens},
          {"num_documents", r.info.num_documents},
          {"sha256", r.info.sha256},
          {"next_file", r.next.pos.file},
          {"next_offset", r.next.pos.offset},
          {"next_line", r.next.pos.line},
          {"next_doc_tokens", r.next.doc_tokens_done},
          {"skipped_documents", r.next.skipped_documents},
          {"skipped_files", r.next.skipped_files}};
}

// One shard's record in progress.json, read strictly (every field named on failure).
ShardRecord shard_record_from_json(const json& j, const std::string& source, const std::string& where) {
  const JsonFields f{source};
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  if (!j.is_object()) throw f.error(where, "expected an object");
  f.only(j, {"file", "num_tokens", "num_documents", "sha256", "next_file", "next_offset", "next_line",
             "next_doc_tokens", "skipped_documents", "skipped_files"},
         where);
  ShardRecord r;
  r.info.file = f.string(j, "file", where + ".file");
  r.info.num_tokens = f.integer(j, "num_tokens", where + ".num_tokens", 0, kMax);
  r.info.num_documents = f.integer(j, "num_documents", where + ".num_documents", 0, kMax);
  r.info.sha256 = f.sha(j, "sha256", where + ".sha256");
  r.next.pos = {f.integer(j, "next_file", where + ".next_file", 0, kMax),
                static_cast<uint64_t>(f.integer(j, "next_offset", where + ".next_offset", 0, kMax)),
                f.integer(j, "next_line", where + ".next_line", 0, kMax)};
  r.next.doc_tokens_done = f.integer(j, "next_doc_tokens", where + ".next_doc_tokens", 0, kMax);
  r.next.skipped_documents = f.integer(j, "skipped_documents", where + ".skipped_documents", 0, kMax);
  r.next.skipped_files = f.integer(j, "skipped_files", where + ".skipped_files", 0, kMax);
  return r;
}


// Everything that determines the output; a resumed run must have the same.
json settings_json(const TokenizeOptions& o, const std::vector<std::string>& files, const std::string& tokenizer_id) {
  json inputs = json::array();
  for (const auto& f : files) inputs.push_back({{"path", fs::absolute(f).lexically_normal().string()},
                                                {"size", fs::file_size(f)}});
  const char* format = o.corpus.format == InputFormat::Auto ? "auto"
                       : o.corpus.format == InputFormat::JsonLines ? "jsonl" : "text";
  return {{"inputs", inputs},
          {"fields", o.corpus.fields},
          {"format", format},
          {"text_unit", o.corpus.text_unit == TextUnit::File ? "file" : "line"},
          {"shard_tokens", o.shard_tokens},
          {"tokenizer", tokenizer_id}};
}

class DirLock {
 public:
  explicit DirLock(const std::string& dir) {
    const auto path = (fs::path(dir) / ".rho_tokenize.lock").string();
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0) throw Error(fmt::format("{}: cannot create the lock file", path));
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      ::close(fd_);
      throw Error(fmt::format("{}: another rho_tokenize is writing this folder", dir));
    }
  }
  ~DirLock() { ::close(fd_); }

 private:
  int fd_ = -1;
};

// Documents for tokenizer training: the lines of each document, in input order, up to a limit.
class TrainingSentences : public sentencepiece::SentenceIterator {
 public:
  TrainingSentences(const std::vector<std::string>& files, const TokenizeOptions& o)
      : reader_(files, o.corpus), files_(files), opt_(o) {
    Next();
  }
  bool done() const override { return done_; }
  const std::string& value() const override { return value_; }
  sentencepiece::util::Status status() const override { return {}; }
  void Next() override {
    while (!done_) {
      if (line_start_ < doc_.size()) {
        size_t end = doc_.find('\n', line_start_);
        if (end == std::string::npos) end = doc_.size();
        value_.assign(doc_, line_start_, end - line_start_);
        line_start_ = end + 1;
        if (value_.find_first_not_of(" \t\r") == std::string::npos) continue;
        if (++sentences_ > opt_.train_max_sentences) break;
        return;
      }
      if (!next_document()) break;
    }
    done_ = true;
  }
  const std::string& error() const { return error_; }

 private:
  bool next_document() {
    Record r;
    try {
      while (reader_.next(r)) {
        if (r.empty_file) continue;  // the tokenising pass reports it
        std::string what;
        int64_t line = 0;
        if (record_text(r, is_json_lines(files_[static_cast<size_t>(r.pos.file)], opt_.corpus.format),
                        opt_.corpus.fields, doc_, what, line)) {
          line_start_ = 0;
          return true;
        }
        if (!opt_.skip_bad_input) {
          error_ = fmt::format("{}: {}", record_location(files_[static_cast<size_t>(r.pos.file)], r.pos, line), what);
          return false;
        }
      }
    } catch (const std::exception& e) {
      error_ = e.what();  // exceptions must not cross SentencePiece's trainer
    }
    return false;
  }
  CorpusReader reader_;
  const std::vector<std::string>& files_;
  const TokenizeOptions& opt_;
  std::string doc_, value_, error_;
  size_t line_start_ = 0;
  int64_t sentences_ = 0;
  bool done_ = false;
};

std::string train_tokenizer(const std::vector<std::string>& files, const TokenizeOptions& o, int threads) {
  TrainingSentences sentences(files, o);
  sentencepiece::SetRandomGeneratorSeed(1);  // the same corpus and settings give the same model
  const std::unordered_map<std::string, std::string> args = {
      {"vocab_size", std::to_string(o.train_vocab_size)},
      {"model_type", o.train_model_type},
      {"byte_fallback", "true"},  // any UTF-8 text encodes without <unk>
      {"num_threads", std::to_string(threads)},
      {"minloglevel", "1"},
  };
  std::string model;
  const auto status = sentencepiece::SentencePieceTrainer::Train(args, &sentences, &model);
  if (!sentences.error().empty()) throw Error(sentences.error());
  if (!status.ok()) throw Error(fmt::format("training the tokenizer failed: {}", status.ToString()));
  return model;
}

// One unit of work: records read in order, then their documents encoded by a worker.
struct Chunk {
  enum Kind { kTokens, kBadRecord, kEmptyFile };
  struct Doc {
    CorpusPosition pos, end;
    Kind kind = kTokens;
    std::vector<int> ids;
    std::string error;  // kBadRecord, kEmptyFile: the message, naming file and line
  };
  std::vector<Record> records;
  std::vector<Doc> docs;
  uint64_t bytes_done = 0;       // input bytes consumed once this chunk is read (progress)
  std::exception_ptr read_error;  // the reader failed after these records
  bool last = false;
};

// One worker's encoder: a SentencePiece model or a Hugging Face tokenizer.json (byte-level BPE), from the bytes
// the dataset folder keeps. Each worker makes its own (both cache words).
// A Tokenizer whose failures become an error string for the record being encoded (the record is then skipped).
class Encoder {
 public:
  Encoder(const std::string& model_bytes, const std::string& config_bytes, bool hf, const std::string& source,
          SpTokenizer::Engine engine)
      : tok_(Tokenizer::parse(hf ? Tokenizer::Kind::HuggingFace : Tokenizer::Kind::SentencePiece, model_bytes,
                              config_bytes, source, engine)) {}
  // false with `error` set when the text cannot be encoded.
  bool encode(const std::string& text, std::vector<int>* ids, std::string* error) {
    try {
      *ids = tok_.encode(text);
      return true;
    } catch (const std::exception& e) {
      *error = e.what();
      return false;
    }
  }
  const Tokenizer& tokenizer() const { return tok_; }

 private:
  Tokenizer tok_;
};

class TokenizeJob {
 public:
  TokenizeJob(const TokenizeOptions& o, std::vector<std::string> files) : opt_(o), files_(std::move(files)) {
    threads_ = o.threads > 0 ? o.threads : static_cast<int>(usable_cpus());
    for (const auto& f : files_) json_.push_back(is_json_lines(f, o.corpus.format));
  }

  TokenizeSummary run();

 private:
  std::string out(const std::string& name) const { return (fs::path(opt_.out_dir) / name).string(); }
  void prepare_folder();
  json read_progress() const;  // progress.json's contents, null when there is none
  void resume(const json& progress);
  void finish();               // the last shard, then manifest.json, then progress.json removed
  void set_up_tokenizer(const json& progress);
  std::vector<ShardRecord> verified_shards(const json& progress);
  void write_progress() const;
  void pipeline();
  void reader_loop();
  void worker_loop();
  void encode(Chunk& c, Encoder& enc) const;
  void write_doc(Chunk::Doc& d);
  void append(const int* ids, size_t n);
  void commit_shard(const ResumePoint& next);
  std::string rates() const;  // the progress line's tail: tokens/s and documents

  const TokenizeOptions& opt_;
  std::vector<std::string> files_;
  std::vector<bool> json_;
  int threads_ = 1;
  json settings_;
  std::string model_bytes_, tokenizer_name_, tokenizer_sha_;
  std::string config_bytes_;  // a tokenizer.json's tokenizer_config.json ("" when there is none)
  bool hf_ = false;           // a Hugging Face tokenizer.json, not a SentencePiece model
  TokenManifest manifest_;

  // The writer's state (caller thread).
  std::vector<ShardRecord> shards_;
  ResumePoint resume_;  // where this run starts reading
  ResumePoint counts_;  // running skip counts
  std::unique_ptr<ShardWriter> writer_;  // made at the first token, numbering on from the shards kept
  int64_t tokens_written_ = 0, docs_written_ = 0, warnings_ = 0;

  // The pipeline: reader -> todo -> workers -> done (by sequence number) -> writer.
  std::mutex m_;
  std::condition_variable cv_todo_, cv_done_, cv_space_;
  std::deque<std::pair<int64_t, std::unique_ptr<Chunk>>> todo_;
  std::map<int64_t, std::unique_ptr<Chunk>> done_;
  int64_t written_seq_ = 0;
  bool stop_ = false, reader_finished_ = false;
  std::unique_ptr<Progress> progress_;  // input bytes as read by this run
  uint64_t start_bytes_ = 0;            // input bytes an interrupted run consumed
};

void TokenizeJob::prepare_folder() {
  // progress.json is removed only after manifest.json is in place: both present means a run was killed between
  // the two, and the rerun finishes it (run() drops the manifest once the rerun's settings are accepted).
  const bool complete = fs::exists(out(kManifest)) && !fs::exists(out(kProgress));
  if (complete && !opt_.overwrite)
    throw Error(fmt::format("{}: already holds a complete dataset ({}); pass --overwrite to replace it",
                            opt_.out_dir, kManifest));
  if (opt_.overwrite) {
    // The manifest goes first: from here on the folder reads as incomplete.
    fs::remove(out(kManifest));
    fs::remove(out(kProgress));
    fsync_dir(opt_.out_dir);
  }
  for (const auto& e : fs::directory_iterator(opt_.out_dir)) {
    const auto name = e.path().filename().string();
    const bool stale_tmp = name.find(".tmp.") != std::string::npos;  // AtomicFileWriter's, from a killed run
    const bool old_shard = opt_.overwrite && name.rfind("shard_", 0) == 0;
    if (stale_tmp || old_shard) fs::remove(e.path());
  }
}

void TokenizeJob::set_up_tokenizer(const json& progress) {
  std::string tokenizer_id;
  if (!opt_.tokenizer.empty()) {
    model_bytes_ = read_text_file(opt_.tokenizer);
    tokenizer_sha_ = sha256_hex(model_bytes_);
    tokenizer_name_ = fs::path(opt_.tokenizer).filename().string();
    tokenizer_id = tokenizer_sha_;
    hf_ = is_hf_tokenizer_file(opt_.tokenizer);
    const auto config = fs::path(opt_.tokenizer).parent_path() / kHfConfigName;
    if (hf_ && fs::exists(config)) {
      config_bytes_ = read_text_file(config.string());
      tokenizer_id += " config " + sha256_hex(config_bytes_);  // it gives the EOS
    }
  } else {
    tokenizer_name_ = kTrainedName;
    tokenizer_id = fmt::format("train vocab_size={} model_type={} max_sentences={}", opt_.train_vocab_size,
                               opt_.train_model_type, opt_.train_max_sentences);
  }
  settings_ = settings_json(opt_, files_, tokenizer_id);
  if (!progress.is_null()) {
    const auto recorded = progress.value("settings", json::object());
    for (const auto& [key, value] : settings_.items())
      if (!recorded.contains(key) || recorded[key] != value)
        throw Error(fmt::format("{}: an interrupted run with different settings ('{}' differs) is in this folder; "
                                "rerun it with the same settings or pass --overwrite to start over",
                                out(kProgress), key));
  }
  if (opt_.tokenizer.empty()) {
    // A trained model is kept with the progress record so that a resumed run does not train again.
    const auto saved = out(kTrainedName);
    if (!progress.is_null() && fs::exists(saved) &&
        sha256_file(saved) == progress.value("tokenizer_sha256", std::string())) {
      model_bytes_ = read_text_file(saved);
    } else {
      model_bytes_ = train_tokenizer(files_, opt_, threads_);
      write_file_atomic(saved, model_bytes_);
    }
    tokenizer_sha_ = sha256_hex(model_bytes_);
  } else {
    const auto copy = out(tokenizer_name_);
    if (!fs::exists(copy) || sha256_file(copy) != tokenizer_sha_) write_file_atomic(copy, model_bytes_);
    if (!config_bytes_.empty()) write_file_atomic(out(kHfConfigName), config_bytes_);
  }
  const auto& model_path = opt_.tokenizer.empty() ? out(kTrainedName) : opt_.tokenizer;
  const Encoder enc(model_bytes_, config_bytes_, hf_, model_path, opt_.sp_engine);
  const Tokenizer& tok = enc.tokenizer();
  if (tok.eos_id() < 0) throw Error(fmt::format("{}: the tokenizer has no EOS piece to end documents", model_path));
  manifest_.vocab_size = tok.vocab_size();
  manifest_.dtype = manifest_.vocab_size <= 65536 ? "uint16" : "uint32";
  manifest_.tokenizer_name = tokenizer_name_;
  manifest_.tokenizer_sha256 = tokenizer_sha_;
  manifest_.bos_id = tok.bos_id();
  manifest_.eos_id = tok.eos_id();
}

std::vector<ShardRecord> TokenizeJob::verified_shards(const json& progress) {
  std::vector<ShardRecord> kept;
  if (progress.is_null()) return kept;
  const int elem = manifest_.dtype == "uint16" ? 2 : 4;
  const auto records = progress.value("shards", json::array());
  for (size_t i = 0; i < records.size(); ++i) {
    ShardRecord r;
    try {
      r = shard_record_from_json(records[i], out(kProgress), fmt::format("shards[{}]", i));
    } catch (const Error& e) {
      throw Error(std::string(e.what()) + "; pass --overwrite to start over");
    }
    const auto path = out(r.info.file);
    std::error_code ec;
    const auto size = fs::file_size(path, ec);
    if (ec || size != static_cast<uint64_t>(r.info.num_tokens * elem) || sha256_file(path) != r.info.sha256) {
      std::fprintf(stderr, "rho_tokenize: %s does not match its progress record; redoing it and what follows\n",
                   path.c_str());
      break;
    }
    kept.push_back(std::move(r));
  }
  return kept;
}

void TokenizeJob::write_progress() const {
  json shards = json::array();
  for (const auto& s : shards_) shards.push_back(shard_record_json(s));
  const json j = {{"format_version", kProgressVersion},
                  {"settings", settings_},
                  {"tokenizer_sha256", tokenizer_sha_},
                  {"shards", shards}};
  write_file_atomic(out(kProgress), j.dump(1) + "\n");
}

void TokenizeJob::encode(Chunk& c, Encoder& enc) const {
  c.docs.resize(c.records.size());
  std::string text, what;
  for (size_t i = 0; i < c.records.size(); ++i) {
    if (c.read_error) break;
    Record& r = c.records[i];
    Chunk::Doc& d = c.docs[i];
    d.pos = r.pos;
    d.end = r.end;
    const auto& path = files_[static_cast<size_t>(r.pos.file)];
    int64_t line = 0;
    if (r.empty_file) {
      d.kind = Chunk::kEmptyFile;
      d.error = fmt::format("{}:1: empty file (no documents)", path);
    } else if (!record_text(r, json_[static_cast<size_t>(r.pos.file)], opt_.corpus.fields, text, what, line)) {
      d.kind = Chunk::kBadRecord;
      d.error = fmt::format("{}: {}", record_location(path, r.pos, line), what);
    } else {
      std::string failure;
      if (!enc.encode(text, &d.ids, &failure)) {
        // Handed to the writer after the documents before it, like a read error: failures stay in input order.
        c.read_error = std::make_exception_ptr(Error(fmt::format("{}: {}", record_location(path, r.pos), failure)));
        c.docs.resize(i);
        break;
      }
    }
    r.raw = std::string();  // release the text early: chunks wait in order for the writer
  }
}

void TokenizeJob::reader_loop() {
  int64_t seq = 0;
  std::unique_ptr<CorpusReader> reader;
  bool more = true;
  while (more) {
    auto c = std::make_unique<Chunk>();
    try {
      if (!reader) reader = std::make_unique<CorpusReader>(files_, opt_.corpus, resume_.pos);
      size_t bytes = 0;
      Record r;
      while (bytes < kChunkBytes && c->records.size() < kChunkRecords && (more = reader->next(r))) {
        bytes += r.raw.size() + 1;
        c->records.push_back(std::move(r));
      }
      c->bytes_done = reader->bytes_done();
    } catch (...) {
      c->read_error = std::current_exception();
      more = false;
    }
    c->last = !more;
    std::unique_lock<std::mutex> l(m_);
    // Bounded work in flight keeps memory independent of the corpus size.
    cv_space_.wait(l, [&] { return stop_ || seq - written_seq_ < 4 * threads_ + 4; });
    if (stop_) return;
    todo_.emplace_back(seq++, std::move(c));
    cv_todo_.notify_one();
  }
  std::lock_guard<std::mutex> l(m_);
  reader_finished_ = true;
  cv_todo_.notify_all();
}

void TokenizeJob::worker_loop() {
  // One encoder per thread: loading is cheap and nothing is shared.
  std::unique_ptr<Encoder> enc;
  std::string load_error;
  try {
    enc = std::make_unique<Encoder>(model_bytes_, config_bytes_, hf_, tokenizer_name_, opt_.sp_engine);
  } catch (const std::exception& e) {
    load_error = e.what();
  }
  for (;;) {
    std::unique_ptr<Chunk> c;
    int64_t seq;
    {
      std::unique_lock<std::mutex> l(m_);
      cv_todo_.wait(l, [&] { return stop_ || !todo_.empty() || reader_finished_; });
      if (stop_ || todo_.empty()) return;
      seq = todo_.front().first;
      c = std::move(todo_.front().second);
      todo_.pop_front();
    }
    if (enc) {
      encode(*c, *enc);
    } else {
      c->docs.clear();
      c->read_error = std::make_exception_ptr(Error("loading the tokenizer failed: " + load_error));
    }
    std::lock_guard<std::mutex> l(m_);
    done_.emplace(seq, std::move(c));
    cv_done_.notify_all();
  }
}

void TokenizeJob::append(const int* ids, size_t n) {
  if (!writer_) writer_ = std::make_unique<ShardWriter>(opt_.out_dir, manifest_.dtype == "uint16", shards_.size());
  writer_->append(ids, n);
  tokens_written_ += static_cast<int64_t>(n);
}

void TokenizeJob::commit_shard(const ResumePoint& next) {
  shards_.push_back(ShardRecord{writer_->commit(), next});
  write_progress();
  if (opt_.on_shard_committed) opt_.on_shard_committed(static_cast<int64_t>(shards_.size()));
}

std::string TokenizeJob::rates() const {
  const double s = std::max(progress_->elapsed_seconds(), 1e-9);
  return fmt::format("{} tok/s  {} docs", human_count(tokens_written_ / s), human_count(docs_written_));
}

void TokenizeJob::write_doc(Chunk::Doc& d) {
  size_t i = 0;
  if (resume_.doc_tokens_done > 0) {  // the first record is the document an earlier run cut at a shard end
    const size_t len = d.ids.size() + (manifest_.bos_id >= 0) + 1;
    if (d.kind != Chunk::kTokens || !(d.pos == resume_.pos) || static_cast<size_t>(resume_.doc_tokens_done) >= len)
      throw Error(fmt::format("{}: the input differs from when the interrupted run read it; pass --overwrite to "
                              "start over", record_location(files_[static_cast<size_t>(d.pos.file)], d.pos)));
    i = static_cast<size_t>(resume_.doc_tokens_done);
    resume_.doc_tokens_done = 0;
  }
  if (d.kind != Chunk::kTokens) {
    if (!opt_.skip_bad_input)
      throw Error(d.error + " (--on-error skip leaves such input out and counts it)");
    (d.kind == Chunk::kEmptyFile ? counts_.skipped_files : counts_.skipped_documents)++;
    const char* clear = ::isatty(STDERR_FILENO) ? "\r\033[K" : "";  // the progress bar may hold the line
    if (warnings_ < kMaxWarnings) std::fprintf(stderr, "%srho_tokenize: skipped %s\n", clear, d.error.c_str());
    if (++warnings_ == kMaxWarnings) std::fprintf(stderr, "rho_tokenize: (further skips are only counted)\n");
    return;
  }
  if (manifest_.bos_id >= 0) d.ids.insert(d.ids.begin(), static_cast<int>(manifest_.bos_id));
  d.ids.push_back(static_cast<int>(manifest_.eos_id));
  while (i < d.ids.size()) {
    const int64_t fill = writer_ ? writer_->tokens() : 0;
    const size_t n = std::min(d.ids.size() - i, static_cast<size_t>(opt_.shard_tokens - fill));
    append(d.ids.data() + i, n);
    i += n;
    if (i == d.ids.size()) {  // a document belongs to the shard holding its EOS
      writer_->end_document();
      ++docs_written_;
    }
    if (writer_->tokens() == opt_.shard_tokens) {
      ResumePoint next = counts_;
      if (i == d.ids.size()) {
        next.pos = d.end;
        next.doc_tokens_done = 0;
      } else {
        next.pos = d.pos;
        next.doc_tokens_done = static_cast<int64_t>(i);
      }
      commit_shard(next);
    }
  }
}

void TokenizeJob::pipeline() {
  std::vector<std::thread> threads;
  auto shutdown = [&] {
    {
      std::lock_guard<std::mutex> l(m_);
      stop_ = true;
    }
    cv_todo_.notify_all();
    cv_space_.notify_all();
    for (auto& t : threads) t.join();
    threads.clear();
  };
  try {
    threads.emplace_back([this] { reader_loop(); });
    for (int i = 0; i < threads_; ++i) threads.emplace_back([this] { worker_loop(); });
    for (int64_t seq = 0;; ++seq) {
      std::unique_ptr<Chunk> c;
      {
        std::unique_lock<std::mutex> l(m_);
        cv_done_.wait(l, [&] { return done_.count(seq) > 0; });
        c = std::move(done_[seq]);
        done_.erase(seq);
        written_seq_ = seq + 1;
      }
      cv_space_.notify_all();
      for (auto& d : c->docs) write_doc(d);
      if (c->read_error) std::rethrow_exception(c->read_error);
      if (progress_) progress_->update(static_cast<int64_t>(c->bytes_done - start_bytes_), rates());
      if (c->last) break;
    }
  } catch (...) {
    shutdown();
    throw;
  }
  shutdown();
}

json TokenizeJob::read_progress() const {
  if (!fs::exists(out(kProgress))) return json();
  try {
    return json::parse(read_text_file(out(kProgress)));
  } catch (const json::exception& e) {
    throw Error(fmt::format("{}: unreadable ({}); pass --overwrite to start over", out(kProgress), e.what()));
  }
}

// The tokenizer (trained before, or given) and the shards that still match their records; where the input goes on.
void TokenizeJob::resume(const json& progress) {
  set_up_tokenizer(progress);
  shards_ = verified_shards(progress);
  if (!shards_.empty()) {
    resume_ = counts_ = shards_.back().next;
    std::fprintf(stderr, "rho_tokenize: resuming %s after %zu complete shard(s)\n", opt_.out_dir.c_str(),
                 shards_.size());
  }
  // A run killed after its manifest but before removing progress.json: the manifest goes before any shard can be
  // redone, and only now that the settings are known to match (a refused rerun keeps the dataset as it was).
  if (fs::exists(out(kManifest))) {
    fs::remove(out(kManifest));
    fsync_dir(opt_.out_dir);
  }
  write_progress();  // records the tokenizer (and drops shards that failed verification)
}

void TokenizeJob::finish() {
  if (writer_ && writer_->tokens() > 0) {
    ResumePoint end = counts_;
    end.pos = CorpusPosition{static_cast<int64_t>(files_.size()), 0, 1};
    commit_shard(end);
  }
  if (progress_) progress_->finish(rates());
  if (shards_.empty())
    throw Error(fmt::format("no documents to tokenise in the input ({} bad records and {} empty files skipped)",
                            counts_.skipped_documents, counts_.skipped_files));
  manifest_.skipped_documents = counts_.skipped_documents;
  manifest_.skipped_files = counts_.skipped_files;
  for (const auto& s : shards_) manifest_.shards.push_back(s.info);
  write_file_atomic(out(kManifest), manifest_.to_json());
  fs::remove(out(kProgress));
  fsync_dir(opt_.out_dir);
}

TokenizeSummary TokenizeJob::run() {
  const auto t0 = Clock::now();
  if (opt_.shard_tokens <= 0) throw Error("the shard size in tokens must be positive");
  if (opt_.corpus.fields.empty()) throw Error("no JSON field given for the document text");
  if (opt_.tokenizer.empty() && opt_.train_vocab_size <= 0)
    throw Error("give a SentencePiece model, or a vocabulary size to train one");
  fs::create_directories(opt_.out_dir);
  DirLock lock(opt_.out_dir);
  prepare_folder();
  resume(read_progress());
  const int64_t resumed = static_cast<int64_t>(shards_.size());

  uint64_t total_bytes = 0;
  for (size_t i = 0; i < files_.size(); ++i) {
    const auto size = fs::file_size(files_[i]);
    total_bytes += size;
    if (static_cast<int64_t>(i) < resume_.pos.file) start_bytes_ += size;
  }
  if (opt_.progress)
    progress_ = std::make_unique<Progress>("rho_tokenize", static_cast<int64_t>(total_bytes - start_bytes_), "B");
  pipeline();
  finish();

  TokenizeSummary summary;
  summary.manifest = manifest_;
  summary.files = files_;
  summary.resumed_shards = resumed;
  summary.bytes_read = total_bytes - start_bytes_;
  summary.tokens_written = tokens_written_;
  summary.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  return summary;
}

}  // namespace

TokenizeSummary tokenize_corpus(const TokenizeOptions& options) {
  if (options.inputs.empty()) throw Error("no input files given");
  // An output folder inside an input folder is not input (a resumed run would otherwise read its own shards).
  const auto out = fs::weakly_canonical(options.out_dir).string() + "/";
  std::vector<std::string> files;
  for (auto& f : expand_inputs(options.inputs))
    if (fs::weakly_canonical(f).string().rfind(out, 0) != 0) files.push_back(std::move(f));
  if (files.empty()) throw Error("no input files outside the output folder");
  TokenizeJob t(options, std::move(files));
  return t.run();
}

}  // namespace rho
