#pragma once
// Reading a text corpus: input lists (files, folders, globs), transparent .gz / .zst decompression, records
// (JSON Lines, text lines, whole text files, or rows of Parquet and Arrow files: librho/data/columnar.h) with their
// position, and the text of each document.
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace rho {

class ColumnarReader;

// Auto: .jsonl / .json / .ndjson (before .gz/.zst) are JSON Lines. Parquet and Arrow files are known by their names
// (columnar_kind) whatever the format says.
enum class InputFormat { Auto, JsonLines, Text };
enum class TextUnit { File, Line };                 // plain text: one document per file, or per line

struct CorpusOptions {
  std::vector<std::string> fields{"text"};  // JSON Lines fields / Parquet and Arrow columns, joined by "\n"
  InputFormat format = InputFormat::Auto;
  TextUnit text_unit = TextUnit::File;
};

// Files, folders (every regular file below, by name, hidden ones skipped) and glob patterns, expanded in argument
// order. Throws rho::Error for a missing path or a pattern that matches nothing.
std::vector<std::string> expand_inputs(const std::vector<std::string>& args);

bool is_json_lines(const std::string& path, InputFormat format);

// Byte offset of the first invalid UTF-8 sequence (overlong forms, surrogates and code points past U+10FFFF
// included), or npos when the text is valid.
size_t find_invalid_utf8(std::string_view text);

// A file's bytes, decompressed by name (.gz, .zst), read front to back.
class ByteReader {
 public:
  static std::unique_ptr<ByteReader> open(const std::string& path);
  virtual ~ByteReader() = default;
  // Up to n bytes; 0 only at the end. Throws rho::Error naming the file on corrupt or truncated data.
  virtual size_t read(char* buf, size_t n) = 0;
  virtual uint64_t file_offset() const = 0;  // bytes of the file itself consumed so far (progress)
};

// Where a record starts (or a reader resumes): file index, decompressed byte offset, 1-based line. In a Parquet or
// Arrow file: the 0-based row as offset, and that row + 1 as line.
struct CorpusPosition {
  int64_t file = 0;
  uint64_t offset = 0;
  int64_t line = 1;
  bool operator==(const CorpusPosition& o) const { return file == o.file && offset == o.offset && line == o.line; }
};

struct Record {
  CorpusPosition pos, end;  // end: where the next record's search begins
  std::string raw;          // a line (without its newline) or a whole file
  bool empty_file = false;  // the file held no documents at all (raw is empty)
  std::string error;        // a Parquet or Arrow unit that could not be read (raw is empty): what is wrong
};

// Where a record is, for messages: "file:line" (text, JSON Lines), "file: row N" (Parquet, Arrow; 0-based row;
// the file alone for an error about the whole file).
std::string record_location(const std::string& path, const CorpusPosition& pos, int64_t line_offset = 0);

// Records of a list of files in order, from a given position on. Blank lines (and blank text files) are no
// records; a file without any record yields one empty_file record.
class CorpusReader {
 public:
  CorpusReader(std::vector<std::string> files, CorpusOptions options, CorpusPosition start = {});
  ~CorpusReader();
  bool next(Record& out);  // false at the end of the last file
  const std::string& file(int64_t index) const { return files_[static_cast<size_t>(index)]; }
  uint64_t bytes_done() const;  // on-disk bytes consumed: earlier files whole, the current one so far

 private:
  bool open_next_file();
  bool read_line(std::string& line);  // false at the end of the current file
  bool next_row(Record& out);         // a Parquet or Arrow file's next row; false at its end
  void close_file();                  // on to the next file
  std::vector<std::string> files_;
  CorpusOptions opt_;
  CorpusPosition pos_;
  std::unique_ptr<ByteReader> in_;
  std::unique_ptr<ColumnarReader> rows_;  // the current file is Parquet or Arrow
  std::vector<char> buf_;
  size_t buf_pos_ = 0, buf_len_ = 0;
  bool json_ = false, whole_file_ = false, file_has_records_ = false, file_open_ = false;
  std::vector<uint64_t> file_sizes_;
  uint64_t bytes_before_ = 0;
};

// The document text of a record (a text record's raw bytes are moved into it), or false with `error` set to
// what is wrong (the caller adds file and line): invalid UTF-8, malformed JSON, a missing or non-string field, a
// record's own error.
// `error_line` is the line of the fault counted from the record's first line (whole text files span many lines).
bool record_text(Record& r, bool json_lines, const std::vector<std::string>& fields, std::string& text,
                 std::string& error, int64_t& error_line);

}  // namespace rho
