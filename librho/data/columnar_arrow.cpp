// librho's Arrow plugin (librho_columnar.so): the Parquet and Arrow IPC readers behind librho/data/columnar.h.
// A separate module, loaded on the first Parquet or Arrow input, so that librho itself does not depend on Arrow's
// libraries (about 100 MB); compiled as C++20, as Arrow's headers require.
#include <arrow/array.h>
#include <arrow/array/concatenate.h>
#include <arrow/array/util.h>
#include <arrow/io/file.h>
#include <arrow/ipc/reader.h>
#include <arrow/record_batch.h>
#include <arrow/table.h>
#include <fmt/format.h>

#include <limits>
#include <parquet/arrow/reader.h>
#include <parquet/exception.h>
#include <parquet/file_reader.h>

#include "librho/data/columnar.h"

namespace rho {

namespace {

// A row group (Parquet) or record batch (Arrow): the chosen columns and where it starts in the file.
struct Chunk {
  std::vector<std::shared_ptr<arrow::Array>> columns;
  int64_t first_row = 0, rows = 0;
  std::string name;  // "row group 3", "record batch 3": for messages
};

enum class Load { Ok, End, Bad };

bool holds_text(arrow::Type::type id) {
  return id == arrow::Type::STRING || id == arrow::Type::LARGE_STRING || id == arrow::Type::STRING_VIEW;
}

std::string_view string_at(const arrow::Array& a, int64_t i) {
  switch (a.type_id()) {
    case arrow::Type::STRING:
      return static_cast<const arrow::StringArray&>(a).GetView(i);
    case arrow::Type::LARGE_STRING:
      return static_cast<const arrow::LargeStringArray&>(a).GetView(i);
    default:
      return static_cast<const arrow::StringViewArray&>(a).GetView(i);
  }
}

// The schema index of each named column, or what is wrong: a missing column (with those there are) or a column
// that holds no strings.
std::string find_columns(const arrow::Schema& schema, const std::vector<std::string>& names, std::vector<int>& index) {
  for (const auto& name : names) {
    const int i = schema.GetFieldIndex(name);
    if (i < 0) {
      std::string have;
      for (const auto& f : schema.fields()) have += (have.empty() ? "'" : ", '") + f->name() + "'";
      return fmt::format("no column '{}' (it has {})", name, have.empty() ? "none" : have);
    }
    const auto& type = schema.field(i)->type();
    if (!holds_text(type->id()))
      return fmt::format("column '{}' holds {}, not strings (string, large_string or string_view)", name,
                         type->ToString());
    index.push_back(i);
  }
  return {};
}

// Rows from a sequence of chunks, from start_row on; the formats supply the chunks.
class ChunkedRows : public ColumnarReader {
 public:
  ChunkedRows(std::vector<std::string> columns, int64_t start_row)
      : columns_(std::move(columns)), start_row_(start_row) {}

  bool next(ColumnarRow& out) override {
    for (;;) {
      if (done_) return false;
      if (!file_error_.empty()) {  // the whole file: nothing else is read from it
        out = ColumnarRow{start_row_, -1, {}, std::move(file_error_)};
        done_ = true;
        return true;
      }
      if (cursor_ < chunk_.rows) return row(out);
      std::string error;
      const Load l = load(chunk_, error);
      if (l == Load::End) {
        done_ = true;
        return false;
      }
      if (l == Load::Bad) {  // the unit is skipped whole; a stream cannot go on past it
        const bool whole = chunk_.rows < 0;
        out = ColumnarRow{chunk_.first_row, whole ? -1 : chunk_.first_row + chunk_.rows, {},
                          fmt::format("{}: {}", chunk_.name, error)};
        done_ = whole;
        cursor_ = chunk_.rows = 0;
        return true;
      }
      cursor_ = std::max<int64_t>(0, start_row_ - chunk_.first_row);
    }
  }

 protected:
  // The next chunk at or after start_row_ (chunks wholly before it are skipped, read or not).
  virtual Load load(Chunk& c, std::string& error) = 0;
  void fail(std::string message) { file_error_ = std::move(message); }
  const std::vector<std::string> columns_;
  std::vector<int> index_;  // schema index of each column
  const int64_t start_row_;

 private:
  bool row(ColumnarRow& out) {
    const int64_t i = cursor_++;
    out.row = chunk_.first_row + i;
    out.next_row = out.row + 1;
    out.text.clear();
    out.error.clear();
    for (size_t k = 0; k < chunk_.columns.size(); ++k) {
      const auto& a = *chunk_.columns[k];
      if (a.IsNull(i)) {
        out.error = fmt::format("{}, column '{}': null, not a string", chunk_.name, columns_[k]);
        return true;
      }
      if (k > 0) out.text += '\n';
      out.text += string_at(a, i);
    }
    return true;
  }
  Chunk chunk_;
  int64_t cursor_ = 0;
  bool done_ = false;
  std::string file_error_;
};

class ParquetRows : public ChunkedRows {
 public:
  ParquetRows(const std::string& path, std::vector<std::string> columns, int64_t start_row)
      : ChunkedRows(std::move(columns), start_row) {
    try {
      auto file = arrow::io::ReadableFile::Open(path);
      if (!file.ok()) {
        fail(file.status().message());
        return;
      }
      auto reader = parquet::arrow::FileReader::Make(arrow::default_memory_pool(),
                                                     parquet::ParquetFileReader::Open(*file));
      if (!reader.ok()) {
        fail(reader.status().message());
        return;
      }
      reader_ = std::move(*reader);
      reader_->set_batch_size(kBatchRows);
      meta_ = reader_->parquet_reader()->metadata();
      std::shared_ptr<arrow::Schema> schema;
      if (auto st = reader_->GetSchema(&schema); !st.ok()) {
        fail(st.message());
        return;
      }
      if (auto e = find_columns(*schema, columns_, index_); !e.empty()) {
        fail(e);
        return;
      }
      // Row groups are read by leaf column: a top-level string column is its own leaf.
      for (const auto& name : columns_) leaf_.push_back(meta_->schema()->ColumnIndex(name));
      for (int g = 0; g < meta_->num_row_groups(); ++g) {  // damaged metadata must not make positions wrap
        const int64_t rows = meta_->RowGroup(g)->num_rows();
        if (rows < 0 || rows > std::numeric_limits<int64_t>::max() - total_) {
          fail(fmt::format("row group {}: impossible row count {}", g, rows));
          return;
        }
        total_ += rows;
      }
    } catch (const parquet::ParquetException& e) {
      fail(fmt::format("not a readable Parquet file ({})", e.what()));
    }
  }

  double fraction_done() const override { return total_ ? static_cast<double>(first_) / static_cast<double>(total_) : 1; }

 private:
  // Rows are read a batch at a time (kBatchRows), one reader per column in lockstep, so that memory stays bounded
  // whatever a row group holds (or its metadata claims) and a decoding error names its column.
  static constexpr int64_t kBatchRows = 4096;

  Load load(Chunk& c, std::string& error) override {
    for (;;) {
      if (columns_in_group_.empty() && !open_group(c, error)) return error.empty() ? Load::End : Load::Bad;
      if (columns_in_group_.empty()) continue;  // a group with no rows, or wholly before start_row_
      c.name = fmt::format("row group {}", group_ - 1);
      c.first_row = group_first_ + in_group_;
      c.rows = group_rows_ - in_group_;  // what a failure now leaves out: the rest of the group
      c.columns.clear();
      int64_t rows = -1;
      for (size_t k = 0; k < columns_in_group_.size(); ++k) {
        std::shared_ptr<arrow::RecordBatch> batch;
        try {
          if (auto st = columns_in_group_[k]->ReadNext(&batch); !st.ok()) return bad(c, error, k, st.message());
        } catch (const parquet::ParquetException& e) {
          return bad(c, error, k, e.what());
        }
        if (!batch) {  // the group is done
          if (k == 0 && in_group_ == group_rows_) break;
          return bad(c, error, k, fmt::format("{} rows where the metadata gives {}", in_group_, group_rows_));
        }
        if (auto st = batch->ValidateFull(); !st.ok()) return bad(c, error, k, st.message());
        if (rows >= 0 && batch->num_rows() != rows)
          return bad(c, error, k, fmt::format("{} rows where the other columns have {}", batch->num_rows(), rows));
        rows = batch->num_rows();
        c.columns.push_back(batch->column(0));
      }
      if (rows < 0) {  // every column at its end
        columns_in_group_.clear();
        continue;
      }
      if (in_group_ + rows > group_rows_)
        return bad(c, error, 0, fmt::format("more rows than the metadata's {}", group_rows_));
      c.rows = rows;
      in_group_ += rows;
      if (rows == 0 || c.first_row + rows <= start_row_) continue;  // resuming past it
      return Load::Ok;
    }
  }

  int groups() const { return meta_ ? meta_->num_row_groups() : 0; }

  // The next row group's column readers (none for a group without rows or before start_row_). False at the end,
  // or with `error` when the group cannot be read (then `c` describes it).
  bool open_group(Chunk& c, std::string& error) {
    if (group_ >= groups()) return false;
    const int g = group_++;
    group_first_ = first_;
    group_rows_ = meta_->RowGroup(g)->num_rows();
    first_ += group_rows_;
    in_group_ = 0;
    if (group_rows_ == 0 || group_first_ + group_rows_ <= start_row_) return true;
    for (size_t k = 0; k < leaf_.size(); ++k) {
      try {
        auto r = reader_->GetRecordBatchReader({g}, {leaf_[k]});
        if (r.ok()) {
          columns_in_group_.push_back(std::move(*r));
          continue;
        }
        error = fmt::format("column '{}': {}", columns_[k], r.status().message());
      } catch (const parquet::ParquetException& e) {
        error = fmt::format("column '{}': {}", columns_[k], e.what());
      }
      columns_in_group_.clear();
      c.name = fmt::format("row group {}", g);
      c.first_row = group_first_;
      c.rows = group_rows_;
      return false;
    }
    return true;
  }

  // A bad batch: the rest of its row group is left out; reading goes on with the next group.
  Load bad(Chunk& c, std::string& error, size_t column, const std::string& what) {
    error = fmt::format("column '{}': {}", columns_[column], what);
    columns_in_group_.clear();
    return Load::Bad;
  }

  std::unique_ptr<parquet::arrow::FileReader> reader_;
  std::shared_ptr<parquet::FileMetaData> meta_;
  std::vector<int> leaf_;
  std::vector<std::unique_ptr<arrow::RecordBatchReader>> columns_in_group_;  // one per column, in lockstep
  int group_ = 0;
  int64_t first_ = 0, total_ = 0, group_first_ = 0, group_rows_ = 0, in_group_ = 0;
};

// Arrow IPC: the random-access file format (magic "ARROW1") or the stream format (what `datasets` caches).
class ArrowRows : public ChunkedRows {
 public:
  ArrowRows(const std::string& path, std::vector<std::string> columns, int64_t start_row)
      : ChunkedRows(std::move(columns), start_row) {
    auto file = arrow::io::ReadableFile::Open(path);
    if (!file.ok()) {
        fail(file.status().message());
        return;
      }
    file_ = *file;
    auto size = file_->GetSize();
    size_ = size.ok() ? *size : 0;
    auto magic = file_->ReadAt(0, 6);
    std::shared_ptr<arrow::Schema> schema;
    if (magic.ok() && (*magic)->ToString() == "ARROW1") {
      auto reader = arrow::ipc::RecordBatchFileReader::Open(file_);
      if (!reader.ok()) {
        fail(fmt::format("not a readable Arrow IPC file ({})", reader.status().message()));
        return;
      }
      file_reader_ = *reader;
      schema = file_reader_->schema();
    } else {
      (void)file_->Seek(0);  // ReadAt() leaves the implicit position undefined
      auto reader = arrow::ipc::RecordBatchStreamReader::Open(file_);
      if (!reader.ok()) {
        fail(fmt::format("not a readable Arrow IPC stream ({})", reader.status().message()));
        return;
      }
      stream_reader_ = *reader;
      schema = stream_reader_->schema();
    }
    if (auto e = find_columns(*schema, columns_, index_); !e.empty()) fail(e);
  }

  double fraction_done() const override {
    if (!file_ || size_ == 0) return 1;
    if (file_reader_) return static_cast<double>(batch_) / std::max(1, file_reader_->num_record_batches());
    auto at = file_->Tell();
    return at.ok() ? static_cast<double>(*at) / static_cast<double>(size_) : 0;
  }

 private:
  Load load(Chunk& c, std::string& error) override {
    for (;;) {
      std::shared_ptr<arrow::RecordBatch> batch;
      const int b = batch_;
      c.name = fmt::format("record batch {}", b);
      c.first_row = first_;
      c.rows = -1;  // unknown until read: a bad batch ends a stream
      if (file_reader_) {
        if (b >= file_reader_->num_record_batches()) return Load::End;
        ++batch_;
        auto r = file_reader_->ReadRecordBatch(b);
        if (!r.ok()) {
          error = r.status().message();
          return Load::Bad;
        }
        batch = *r;
      } else {
        ++batch_;
        if (auto st = stream_reader_->ReadNext(&batch); !st.ok()) {
          error = st.message();
          return Load::Bad;
        }
        if (!batch) return Load::End;
      }
      // Full validation: a damaged batch can pass the cheap checks with offsets past its data.
      if (auto st = batch->ValidateFull(); !st.ok()) {
        error = st.message();
        return Load::Bad;
      }
      c.rows = batch->num_rows();
      first_ += c.rows;
      if (c.rows == 0 || c.first_row + c.rows <= start_row_) continue;  // no rows, or resuming past it
      c.columns.clear();
      for (int i : index_) c.columns.push_back(batch->column(i));
      return Load::Ok;
    }
  }

  std::shared_ptr<arrow::io::ReadableFile> file_;
  std::shared_ptr<arrow::ipc::RecordBatchFileReader> file_reader_;
  std::shared_ptr<arrow::ipc::RecordBatchStreamReader> stream_reader_;
  int64_t size_ = 0, first_ = 0;
  int batch_ = 0;
};

}  // namespace

}  // namespace rho

// The plugin's one entry point (librho/data/columnar.cpp looks it up): a new reader, owned by the caller.
extern "C" rho::ColumnarReader* rho_columnar_open(const std::string& path, rho::ColumnarKind kind,
                                                  const std::vector<std::string>& columns, int64_t start_row) {
  if (kind == rho::ColumnarKind::Parquet) return new rho::ParquetRows(path, columns, start_row);
  return new rho::ArrowRows(path, columns, start_row);
}

