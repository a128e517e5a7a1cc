#pragma once
// Text <-> token ids with a SentencePiece model or a Hugging Face tokenizer.json (byte-level BPE; chosen by the
// file), for evaluation prompts and generations and the token view.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace rho {

class TextTokenizer {
 public:
  // `path`: a SentencePiece .model file, a tokenizer.json, or a token dataset folder (rho_tokenize output), whose
  // manifest.json names the tokenizer stored beside it. Throws rho::Error naming the path when it is none of these.
  static TextTokenizer load(const std::string& path);
  std::vector<int64_t> encode(const std::string& text) const;
  std::string decode(const std::vector<int64_t>& ids) const;
  int64_t bos_id() const;  // -1 when the model has none
  int64_t eos_id() const;
  int64_t vocab_size() const;
  std::string piece_text(int64_t id) const;  // one token as text (for display)
  const std::string& path() const;  // the .model file actually read

 private:
  TextTokenizer() = default;  // made by load() only
  struct Impl;
  std::shared_ptr<const Impl> impl_;
};

}  // namespace rho
