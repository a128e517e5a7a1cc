#include "librho/eval/text_tokenizer.h"

#include <fmt/format.h>

#include <filesystem>
#include <mutex>

#include "librho/data/hf_tokenizer.h"
#include "librho/data/sp_tokenizer.h"
#include "librho/data/token_dataset.h"
#include "librho/score/token_view.h"
#include "librho/util/error.h"
#include "librho/util/files.h"

namespace rho {

struct TextTokenizer::Impl {
  std::unique_ptr<SpTokenizer> sp;
  std::unique_ptr<HfTokenizer> hf;  // a tokenizer.json instead of the SentencePiece model
  std::string path;
  mutable std::mutex encode_mutex;  // both encoders cache words: one caller at a time
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
  if (is_hf_tokenizer_file(impl->path)) {
    impl->hf = std::make_unique<HfTokenizer>(HfTokenizer::load(impl->path));
  } else {
    impl->sp = std::make_unique<SpTokenizer>(SpTokenizer::load(impl->path));
  }
  TextTokenizer t;
  t.impl_ = std::move(impl);
  return t;
}

std::vector<int64_t> TextTokenizer::encode(const std::string& text) const {
  std::lock_guard<std::mutex> lock(impl_->encode_mutex);
  const auto ids = impl_->hf ? impl_->hf->encode(text) : impl_->sp->encode(text);
  return {ids.begin(), ids.end()};
}

std::string TextTokenizer::decode(const std::vector<int64_t>& ids) const {
  std::vector<int> v(ids.begin(), ids.end());
  return impl_->hf ? impl_->hf->decode(v) : impl_->sp->decode(v);
}

int64_t TextTokenizer::bos_id() const { return impl_->hf ? impl_->hf->bos_id() : impl_->sp->bos_id(); }
int64_t TextTokenizer::eos_id() const { return impl_->hf ? impl_->hf->eos_id() : impl_->sp->eos_id(); }
int64_t TextTokenizer::vocab_size() const { return impl_->hf ? impl_->hf->vocab_size() : impl_->sp->vocab_size(); }
std::string TextTokenizer::piece_text(int64_t id) const {
  if (id < 0 || id >= vocab_size())
    throw Error(fmt::format("{}: token id {} is outside the vocabulary (size {})", impl_->path, id, vocab_size()));
  if (impl_->hf) return impl_->hf->piece(static_cast<int>(id));
  return piece_to_text(impl_->sp->piece(static_cast<int>(id)));
}
const std::string& TextTokenizer::path() const { return impl_->path; }

}  // namespace rho
