#include "librho/eval/text_tokenizer.h"

#include <fmt/format.h>

#include <filesystem>
#include <mutex>

#include "librho/data/token_dataset.h"
#include "librho/data/tokenizer.h"
#include "librho/score/token_view.h"
#include "librho/util/error.h"
#include "librho/util/files.h"

namespace rho {

struct TextTokenizer::Impl {
  std::unique_ptr<Tokenizer> tok;
  std::string path;
  mutable std::mutex encode_mutex;  // both kinds cache while encoding: one caller at a time
};

TextTokenizer TextTokenizer::load(const std::string& path) {
  namespace fs = std::filesystem;
  auto impl = std::make_shared<Impl>();
  impl->path = path;
  if (fs::is_directory(path)) {
    const auto manifest_path = (fs::path(path) / "manifest.json").string();
    if (!fs::exists(manifest_path))
      throw Error(fmt::format("{}: a folder without manifest.json is not a token dataset (give a .model file)", path));
    const auto m = TokenManifest::from_json(read_text_file(manifest_path), manifest_path);
    impl->path = (fs::path(path) / m.tokenizer_name).string();
  }
  if (!fs::exists(impl->path)) throw Error(fmt::format("{}: no such tokenizer file", impl->path));
  impl->tok = std::make_unique<Tokenizer>(Tokenizer::load(impl->path));
  TextTokenizer t;
  t.impl_ = std::move(impl);
  return t;
}

std::vector<int64_t> TextTokenizer::encode(const std::string& text) const {
  std::lock_guard<std::mutex> lock(impl_->encode_mutex);
  const auto ids = impl_->tok->encode(text);
  return {ids.begin(), ids.end()};
}

std::string TextTokenizer::decode(const std::vector<int64_t>& ids) const {
  std::vector<int> v(ids.begin(), ids.end());
  return impl_->tok->decode(v);
}

int64_t TextTokenizer::bos_id() const { return impl_->tok->bos_id(); }
int64_t TextTokenizer::eos_id() const { return impl_->tok->eos_id(); }
int64_t TextTokenizer::vocab_size() const { return impl_->tok->vocab_size(); }
std::string TextTokenizer::piece_text(int64_t id) const {
  if (id < 0 || id >= vocab_size())
    throw Error(fmt::format("{}: token id {} is outside the vocabulary (size {})", impl_->path, id, vocab_size()));
  const auto piece = impl_->tok->piece(static_cast<int>(id));
  return impl_->tok->kind() == Tokenizer::Kind::HuggingFace ? piece : piece_to_text(piece);
}
const std::string& TextTokenizer::path() const { return impl_->path; }

}  // namespace rho
