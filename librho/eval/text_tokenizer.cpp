#include "librho/eval/text_tokenizer.h"

#include <fmt/format.h>
#include <sentencepiece_processor.h>

#include <filesystem>

#include "librho/data/token_dataset.h"
#include "librho/util/error.h"
#include "librho/util/files.h"

namespace rho {

struct TextTokenizer::Impl {
  sentencepiece::SentencePieceProcessor sp;
  std::string path;
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
  const auto status = impl->sp.LoadFromSerializedProto(read_text_file(impl->path));
  if (!status.ok()) throw Error(fmt::format("{}: not a SentencePiece model ({})", impl->path, status.ToString()));
  TextTokenizer t;
  t.impl_ = std::move(impl);
  return t;
}

std::vector<int64_t> TextTokenizer::encode(const std::string& text) const {
  std::vector<int> ids;
  const auto status = impl_->sp.Encode(text, &ids);
  if (!status.ok()) throw Error(fmt::format("{}: encoding failed ({})", impl_->path, status.ToString()));
  return {ids.begin(), ids.end()};
}

std::string TextTokenizer::decode(const std::vector<int64_t>& ids) const {
  std::vector<int> v(ids.begin(), ids.end());
  std::string text;
  const auto status = impl_->sp.Decode(v, &text);
  if (!status.ok()) throw Error(fmt::format("{}: decoding failed ({})", impl_->path, status.ToString()));
  return text;
}

int64_t TextTokenizer::bos_id() const { return impl_->sp.bos_id(); }
int64_t TextTokenizer::eos_id() const { return impl_->sp.eos_id(); }
int64_t TextTokenizer::vocab_size() const { return impl_->sp.GetPieceSize(); }
const std::string& TextTokenizer::path() const { return impl_->path; }

}  // namespace rho
