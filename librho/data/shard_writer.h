#pragma once
// One token shard at a time, as rho_tokenize writes them: raw little-endian ids (uint16 or uint32), streamed under
// a temporary name and renamed into place on commit (a half shard never carries a shard's name), hashed while
// written. Shard i is `shard_{i:05d}.bin` in the dataset folder.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "librho/data/manifest.h"

namespace rho {

class AtomicFileWriter;
class Sha256;

std::string shard_file_name(size_t index);  // "shard_00003.bin"

class ShardWriter {
 public:
  // dir: the dataset folder; next_index: the number of the first shard this writer makes (resuming: those kept).
  ShardWriter(std::string dir, bool uint16, size_t next_index);
  ~ShardWriter();
  void append(const int* ids, size_t n);  // opens the next shard when none is open
  void end_document() { ++docs_; }        // a document belongs to the shard holding its EOS
  int64_t tokens() const { return fill_; }  // in the open shard (0 when none is open)
  // Renames the open shard into place and returns what the manifest records of it.
  ShardInfo commit();

 private:
  std::string dir_;
  bool uint16_;
  size_t index_;
  std::unique_ptr<AtomicFileWriter> file_;
  std::unique_ptr<Sha256> hash_;
  int64_t fill_ = 0, docs_ = 0;
  std::vector<uint8_t> pack_;
};

}  // namespace rho
