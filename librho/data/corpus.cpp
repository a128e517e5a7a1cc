#include "librho/data/corpus.h"

#include "librho/data/columnar.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <glob.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "librho/util/error.h"
#include "librho/util/text.h"

namespace rho {
namespace fs = std::filesystem;
namespace {

bool is_hidden(const fs::path& p) { return p.filename().string().rfind('.', 0) == 0; }

void add_path(const std::string& arg, std::vector<std::string>& out) {
  std::error_code ec;
  if (fs::is_directory(arg, ec)) {
    std::vector<std::string> found;
    for (auto it = fs::recursive_directory_iterator(arg); it != fs::recursive_directory_iterator(); ++it) {
      if (is_hidden(it->path())) {
        if (it->is_directory()) it.disable_recursion_pending();
        continue;
      }
      if (it->is_regular_file()) found.push_back(it->path().string());
    }
    std::sort(found.begin(), found.end());  // directory order is arbitrary; the output must not be
    out.insert(out.end(), found.begin(), found.end());
  } else if (fs::is_regular_file(arg, ec)) {
    out.push_back(arg);
  } else if (fs::exists(arg, ec)) {
    throw Error(fmt::format("{}: not a regular file or folder", arg));
  } else {
    throw Error(fmt::format("{}: no such file or folder", arg));
  }
}

std::string errno_text() { return std::strerror(errno); }

class PlainReader : public ByteReader {
 public:
  explicit PlainReader(const std::string& path) : path_(path) {
    fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) throw Error(fmt::format("{}: cannot open ({})", path, errno_text()));
  }
  ~PlainReader() override { ::close(fd_); }
  size_t read(char* buf, size_t n) override {
    for (;;) {
      ssize_t got = ::read(fd_, buf, n);
      if (got < 0 && errno == EINTR) continue;
      if (got < 0) throw Error(fmt::format("{}: read failed ({})", path_, errno_text()));
      offset_ += static_cast<uint64_t>(got);
      return static_cast<size_t>(got);
    }
  }
  uint64_t file_offset() const override { return offset_; }

 private:
  std::string path_;
  int fd_ = -1;
  uint64_t offset_ = 0;
};

class GzipReader : public ByteReader {
 public:
  explicit GzipReader(const std::string& path) : path_(path) {
    gz_ = gzopen(path.c_str(), "rb");
    if (!gz_) throw Error(fmt::format("{}: cannot open ({})", path, errno_text()));
    gzbuffer(gz_, 1 << 18);
  }
  ~GzipReader() override { gzclose(gz_); }
  size_t read(char* buf, size_t n) override {
    const int got = gzread(gz_, buf, static_cast<unsigned>(std::min<size_t>(n, 1 << 30)));
    int code = Z_OK;
    const char* msg = gzerror(gz_, &code);
    // A cut-off stream ends like a complete one, with Z_BUF_ERROR noted: zlib allows for files still growing.
    if (got < 0 || (got == 0 && code == Z_BUF_ERROR))
      throw Error(fmt::format("{}: corrupt or truncated gzip data ({})", path_, msg));
    // zlib passes non-gzip bytes through unchanged; a .gz that is not gzip is a mistake worth naming.
    if (got > 0 && gzdirect(gz_)) throw Error(fmt::format("{}: not gzip data", path_));
    return static_cast<size_t>(got);
  }
  uint64_t file_offset() const override { return static_cast<uint64_t>(gzoffset(gz_)); }

 private:
  std::string path_;
  gzFile gz_ = nullptr;
};

class ZstdReader : public ByteReader {
 public:
  explicit ZstdReader(const std::string& path) : path_(path), file_(path), in_buf_(ZSTD_DStreamInSize()) {
    ds_ = ZSTD_createDStream();
    if (!ds_) throw Error(fmt::format("{}: cannot create a zstd decoder", path));
  }
  ~ZstdReader() override { ZSTD_freeDStream(ds_); }
  size_t read(char* buf, size_t n) override {
    ZSTD_outBuffer out{buf, n, 0};
    for (;;) {
      if (in_.pos < in_.size || flush_pending_) {
        const size_t r = ZSTD_decompressStream(ds_, &out, &in_);
        if (ZSTD_isError(r))
          throw Error(fmt::format("{}: corrupt zstd data ({})", path_, ZSTD_getErrorName(r)));
        frame_open_ = r != 0;
        flush_pending_ = out.pos == out.size;  // a full output buffer: the decoder may hold more
        if (out.pos > 0) return out.pos;
        if (in_.pos < in_.size) continue;
      }
      const size_t got = file_.read(in_buf_.data(), in_buf_.size());
      if (got == 0) {
        if (frame_open_) throw Error(fmt::format("{}: truncated zstd data", path_));
        return 0;
      }
      in_ = ZSTD_inBuffer{in_buf_.data(), got, 0};
    }
  }
  uint64_t file_offset() const override { return file_.file_offset(); }

 private:
  std::string path_;
  PlainReader file_;
  std::vector<char> in_buf_;
  ZSTD_DStream* ds_ = nullptr;
  ZSTD_inBuffer in_{nullptr, 0, 0};
  bool flush_pending_ = false, frame_open_ = false;
};

bool is_blank(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c == ' ' || (c >= '\t' && c <= '\r'); });
}

const char* json_type(const nlohmann::json& v) { return v.type_name(); }

// nlohmann's messages start with "[json.exception.parse_error.101] "; the reader needs only the rest.
std::string json_message(const std::exception& e) {
  std::string m = e.what();
  if (!m.empty() && m[0] == '[') {
    const auto close = m.find("] ");
    if (close != std::string::npos) m = m.substr(close + 2);
  }
  return m;
}

}  // namespace

std::vector<std::string> expand_inputs(const std::vector<std::string>& args) {
  std::vector<std::string> out;
  for (const auto& arg : args) {
    std::error_code ec;
    if (arg.find_first_of("*?[") != std::string::npos && !fs::exists(arg, ec)) {
      glob_t g{};
      const int rc = ::glob(arg.c_str(), 0, nullptr, &g);
      if (rc == GLOB_NOMATCH) {
        ::globfree(&g);
        throw Error(fmt::format("{}: pattern matches no file", arg));
      }
      if (rc != 0) {
        ::globfree(&g);
        throw Error(fmt::format("{}: cannot expand pattern", arg));
      }
      std::vector<std::string> matches(g.gl_pathv, g.gl_pathv + g.gl_pathc);  // sorted by glob()
      ::globfree(&g);
      for (const auto& m : matches) add_path(m, out);
    } else {
      add_path(arg, out);
    }
  }
  return out;
}

bool is_json_lines(const std::string& path, InputFormat format) {
  if (format != InputFormat::Auto) return format == InputFormat::JsonLines;
  std::string name = path;
  for (const char* z : {".gz", ".zst", ".zstd"})
    if (ends_with(name, z)) name.resize(name.size() - std::strlen(z));
  return ends_with(name, ".jsonl") || ends_with(name, ".json") || ends_with(name, ".ndjson");
}

size_t find_invalid_utf8(std::string_view text) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    // ASCII runs dominate real text: skip them eight bytes at a time.
    while (i + 8 <= n) {
      uint64_t w;
      std::memcpy(&w, s + i, 8);
      if (w & 0x8080808080808080ull) break;
      i += 8;
    }
    if (i >= n) break;
    const size_t len = utf8_char_size(s + i, n - i);
    if (len == 0) return i;
    i += len;
  }
  return std::string_view::npos;
}

std::unique_ptr<ByteReader> ByteReader::open(const std::string& path) {
  if (ends_with(path, ".gz")) return std::make_unique<GzipReader>(path);
  if (ends_with(path, ".zst") || ends_with(path, ".zstd")) return std::make_unique<ZstdReader>(path);
  return std::make_unique<PlainReader>(path);
}

CorpusReader::CorpusReader(std::vector<std::string> files, CorpusOptions options, CorpusPosition start)
    : files_(std::move(files)), opt_(std::move(options)), pos_(start), buf_(1 << 20) {
  for (const auto& f : files_) {
    std::error_code ec;
    const auto size = fs::file_size(f, ec);
    if (ec) throw Error(fmt::format("{}: cannot read its size ({})", f, ec.message()));
    file_sizes_.push_back(size);
    // A Parquet or Arrow input that cannot be read fails now, not after the files before it.
    if (columnar_kind(f) != ColumnarKind::None)
      if (const auto why = columnar_unavailable(f); !why.empty()) throw Error(why);
  }
  for (int64_t i = 0; i < start.file && i < static_cast<int64_t>(files_.size()); ++i) bytes_before_ += file_sizes_[i];
}

CorpusReader::~CorpusReader() = default;

uint64_t CorpusReader::bytes_done() const {
  if (rows_) return bytes_before_ + static_cast<uint64_t>(rows_->fraction_done() *
                                                          static_cast<double>(file_sizes_[static_cast<size_t>(pos_.file)]));
  return bytes_before_ + (in_ ? in_->file_offset() : 0);
}

std::string record_location(const std::string& path, const CorpusPosition& pos, int64_t line_offset) {
  if (columnar_kind(path) != ColumnarKind::None)
    return pos.line == 0 ? path : fmt::format("{}: row {}", path, pos.offset);
  return fmt::format("{}:{}", path, pos.line + line_offset);
}

bool CorpusReader::open_next_file() {
  if (pos_.file >= static_cast<int64_t>(files_.size())) return false;
  const auto& path = files_[static_cast<size_t>(pos_.file)];
  file_has_records_ = pos_.offset > 0;  // resuming inside a file: it had records before
  file_open_ = true;
  if (const auto kind = columnar_kind(path); kind != ColumnarKind::None) {
    rows_ = ColumnarReader::open(path, kind, opt_.fields, static_cast<int64_t>(pos_.offset));
    return true;
  }
  in_ = ByteReader::open(path);
  buf_pos_ = buf_len_ = 0;
  json_ = is_json_lines(path, opt_.format);
  whole_file_ = !json_ && opt_.text_unit == TextUnit::File;
  // Resuming: skip what earlier runs consumed (decompressed streams cannot seek).
  uint64_t left = pos_.offset;
  while (left > 0) {
    const size_t got = in_->read(buf_.data(), static_cast<size_t>(std::min<uint64_t>(left, buf_.size())));
    if (got == 0) throw Error(fmt::format("{}: shorter than the recorded resume position {} (changed since?)", path,
                                          pos_.offset));
    left -= got;
  }
  return true;
}

void CorpusReader::close_file() {
  bytes_before_ += file_sizes_[static_cast<size_t>(pos_.file)];
  in_.reset();
  rows_.reset();
  file_open_ = false;
  pos_ = CorpusPosition{pos_.file + 1, 0, 1};
}

bool CorpusReader::next_row(Record& out) {
  ColumnarRow row;
  const int64_t index = pos_.file;
  if (rows_->next(row)) {
    // A whole-file error (next_row < 0) has no row of its own: line 0 (record_location then names the file only).
    const CorpusPosition start{index, static_cast<uint64_t>(row.row), row.next_row < 0 ? 0 : row.row + 1};
    if (row.next_row >= 0)
      pos_ = CorpusPosition{index, static_cast<uint64_t>(row.next_row), row.next_row + 1};
    else
      close_file();  // an error covering the rest of the file
    out = Record{start, pos_, std::move(row.text), false, std::move(row.error)};
    file_has_records_ = true;
    return true;
  }
  const bool had_records = file_has_records_;
  close_file();
  if (had_records) return false;
  out = Record{CorpusPosition{index, 0, 1}, pos_, std::string(), true, {}};
  return true;
}

bool CorpusReader::read_line(std::string& line) {
  line.clear();
  for (;;) {
    if (buf_pos_ == buf_len_) {
      buf_len_ = in_->read(buf_.data(), buf_.size());
      buf_pos_ = 0;
      if (buf_len_ == 0) {
        if (line.empty()) return false;
        pos_.offset += line.size();
        return true;
      }
    }
    const char* start = buf_.data() + buf_pos_;
    const auto* nl = static_cast<const char*>(std::memchr(start, '\n', buf_len_ - buf_pos_));
    if (nl) {
      line.append(start, static_cast<size_t>(nl - start));
      buf_pos_ += static_cast<size_t>(nl - start) + 1;
      pos_.offset += line.size() + 1;
      return true;
    }
    line.append(start, buf_len_ - buf_pos_);
    buf_pos_ = buf_len_;
  }
}

bool CorpusReader::next(Record& out) {
  for (;;) {
    if (!file_open_ && !open_next_file()) return false;
    if (rows_) {
      if (next_row(out)) return true;
      continue;
    }
    const CorpusPosition start = pos_;
    std::string text;
    bool got;
    if (whole_file_) {
      for (size_t n; (n = in_->read(buf_.data(), buf_.size())) > 0;) text.append(buf_.data(), n);
      got = !is_blank(text);
    } else {
      got = read_line(text);
      if (got) ++pos_.line;
      if (got && is_blank(text)) continue;
      if (got && !json_ && !text.empty() && text.back() == '\r') text.pop_back();  // CRLF files
    }
    if (got && !whole_file_) {
      out = Record{start, pos_, std::move(text), false, {}};
      file_has_records_ = true;
      return true;
    }
    // End of this file (a whole text file ends after its one record).
    const bool had_records = file_has_records_ || got;
    const int64_t index = pos_.file;
    close_file();
    if (got) {
      out = Record{start, pos_, std::move(text), false, {}};
      return true;
    }
    if (!had_records) {
      out = Record{CorpusPosition{index, 0, 1}, pos_, std::string(), true, {}};
      return true;
    }
  }
}

bool record_text(Record& r, bool json_lines, const std::vector<std::string>& fields, std::string& text,
                 std::string& error, int64_t& error_line) {
  error_line = 0;
  if (!r.error.empty()) {
    error = r.error;
    return false;
  }
  const size_t bad = find_invalid_utf8(r.raw);
  if (bad != std::string_view::npos) {
    const size_t line_start = bad == 0 ? std::string::npos : r.raw.rfind('\n', bad - 1);
    const size_t column = line_start == std::string::npos ? bad + 1 : bad - line_start;
    error_line = std::count(r.raw.begin(), r.raw.begin() + static_cast<std::ptrdiff_t>(bad), '\n');
    error = fmt::format("invalid UTF-8 (byte 0x{:02x} at column {})", static_cast<unsigned char>(r.raw[bad]), column);
    return false;
  }
  if (!json_lines) {
    text = std::move(r.raw);
    return true;
  }
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(r.raw);
  } catch (const nlohmann::json::exception& e) {
    error = "malformed JSON: " + json_message(e);
    return false;
  }
  if (!j.is_object()) {
    error = fmt::format("not a JSON object (a JSON {})", json_type(j));
    return false;
  }
  text.clear();
  for (size_t i = 0; i < fields.size(); ++i) {
    auto it = j.find(fields[i]);
    if (it == j.end()) {
      error = fmt::format("missing field '{}'", fields[i]);
      return false;
    }
    if (!it->is_string()) {
      error = fmt::format("field '{}' is a {}, not a string", fields[i], json_type(*it));
      return false;
    }
    if (i > 0) text += '\n';
    text += it->get_ref<const std::string&>();
  }
  return true;
}

}  // namespace rho
