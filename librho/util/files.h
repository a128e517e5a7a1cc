#pragma once
// Files: whole-file reads, read-only memory maps, and atomic writes (temporary name, fsync, rename),
// so that a crash never leaves a half-written file under the final name.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace rho {

std::string read_text_file(const std::string& path);

// Writes `data` to `path` atomically: `path.tmp.<pid>` is written and fsynced, then renamed over `path`.
void write_file_atomic(const std::string& path, const void* data, size_t size);
inline void write_file_atomic(const std::string& path, const std::string& text) {
  write_file_atomic(path, text.data(), text.size());
}

// Streams a file under a temporary name; commit() fsyncs and renames it into place.
// Destroyed without commit(), the temporary file is removed and `path` is untouched.
class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(std::string path);
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;
  void write(const void* data, size_t size);
  void commit();
  uint64_t bytes_written() const { return written_; }

 private:
  std::string path_, tmp_;
  int fd_ = -1;
  uint64_t written_ = 0;
};

// A read-only memory map of a whole file; shared so that tensors viewing it keep it alive.
class MappedFile {
 public:
  static std::shared_ptr<MappedFile> open(const std::string& path);
  ~MappedFile();
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile() = default;
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// fsync a directory so that renames inside it survive a power cut.
void fsync_dir(const std::string& dir);

}  // namespace rho
