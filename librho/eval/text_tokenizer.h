#pragma once
// Text <-> token ids with a SentencePiece model, for evaluation prompts and generations.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace rho {

class TextTokenizer {
 public:
  // `path`: a SentencePiece .model file, or a token dataset folder (rho_tokenize output), whose manifest.json
  // names the model stored beside it. Throws rho::Error naming the path when it is neither.
  static TextTokenizer load(const std::string& path);
  std::vector<int64_t> encode(const std::string& text) const;
  std::string decode(const std::vector<int64_t>& ids) const;
  int64_t bos_id() const;  // -1 when the model has none
  int64_t eos_id() const;
  int64_t vocab_size() const;
  const std::string& path() const;  // the .model file actually read

 private:
  TextTokenizer() = default;  // made by load() only
  struct Impl;
  std::shared_ptr<const Impl> impl_;
};

}  // namespace rho
