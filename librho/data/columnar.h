#pragma once
// Columnar corpora: Parquet files and Arrow IPC files and streams (the layouts Hugging Face datasets are published
// and cached in: Parquet shards, `datasets.save_to_disk`'s data-*.arrow), read with Apache Arrow's C++ library.
// The readers live in a plugin beside librho_data.so, loaded on first use, so that librho itself does not depend on
// Arrow's libraries. One document per row: the row's chosen string columns (string, large_string or string_view)
// joined by "\n".
//
//   columnar_kind(path)    by name: .parquet / .pq → Parquet; .arrow / .feather / .ipc → Arrow IPC (file or
//                          stream, told apart by the file's magic bytes)
//   columnar_unavailable(path)  why `path` cannot be read: empty when librho's Arrow plugin (librho_columnar.so,
//                          built when CMake finds pyarrow) loads, else the message open() throws, saying how to get
//                          it (CorpusReader checks every input with it before reading any)
//   ColumnarReader         rows from a given row on: Parquet row groups in batches of 4,096 rows, Arrow record
//                          batches whole
//
// Bad input is returned, not thrown, so that `--on-error skip` can count it and go on: a missing or non-string
// column, or a file that is not Parquet/Arrow or is truncated, is one error covering the whole file; a row group
// that cannot be decoded is one error covering the rest of that group; a null value is one error for its row.
// Each message names the column, and the row group or batch where there is one.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace rho {

enum class ColumnarKind { None, Parquet, Arrow };

ColumnarKind columnar_kind(const std::string& path);
std::string columnar_unavailable(const std::string& path);

struct ColumnarRow {
  int64_t row = 0;       // 0-based row of the file where this unit starts
  int64_t next_row = 0;  // where reading goes on; -1: past the end of the file (a whole-file error)
  std::string text;      // the document (when error is empty)
  std::string error;     // what is wrong, naming the row group or batch and the column
};

class ColumnarReader {
 public:
  // Opens `path` and positions it at `start_row` (the row group or batch holding it is read whole).
  static std::unique_ptr<ColumnarReader> open(const std::string& path, ColumnarKind kind,
                                              const std::vector<std::string>& columns, int64_t start_row);
  virtual ~ColumnarReader() = default;
  virtual bool next(ColumnarRow& out) = 0;   // false at the end of the file
  virtual double fraction_done() const = 0;  // of the file, for progress
};

}  // namespace rho
