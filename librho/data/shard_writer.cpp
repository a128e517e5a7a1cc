#include "librho/data/shard_writer.h"

#include <fmt/format.h>

#include <cstring>
#include <filesystem>

#include "librho/util/files.h"
#include "librho/util/sha256.h"

namespace rho {

std::string shard_file_name(size_t index) { return fmt::format("shard_{:05d}.bin", index); }

ShardWriter::ShardWriter(std::string dir, bool uint16, size_t next_index)
    : dir_(std::move(dir)), uint16_(uint16), index_(next_index) {}

ShardWriter::~ShardWriter() = default;

void ShardWriter::append(const int* ids, size_t n) {
  if (!file_) {
    file_ = std::make_unique<AtomicFileWriter>((std::filesystem::path(dir_) / shard_file_name(index_)).string());
    hash_ = std::make_unique<Sha256>();
  }
  pack_.resize(n * (uint16_ ? 2 : 4));
  for (size_t i = 0; i < n; ++i) {  // little-endian on every platform we build for
    if (uint16_) {
      const uint16_t v = static_cast<uint16_t>(ids[i]);
      std::memcpy(pack_.data() + 2 * i, &v, 2);
    } else {
      const uint32_t v = static_cast<uint32_t>(ids[i]);
      std::memcpy(pack_.data() + 4 * i, &v, 4);
    }
  }
  file_->write(pack_.data(), pack_.size());
  hash_->update(pack_.data(), pack_.size());
  fill_ += static_cast<int64_t>(n);
}

ShardInfo ShardWriter::commit() {
  file_->commit();
  ShardInfo info{shard_file_name(index_), fill_, docs_, hash_->hex_digest()};
  file_.reset();
  hash_.reset();
  fill_ = docs_ = 0;
  ++index_;
  return info;
}

}  // namespace rho
