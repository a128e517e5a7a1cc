#pragma once
// Tokenizer: either kind of tokenizer librho reads, behind one interface: a SentencePiece model (SpTokenizer) or a
// Hugging Face tokenizer.json (HfTokenizer). rho_tokenize's pipeline and rho_eval's text tokenizer use it, so the
// choice between the two is made in one place. Both kinds keep caches while encoding: an instance is for one
// thread at a time.
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "librho/data/sp_tokenizer.h"

namespace rho {

class HfTokenizer;

class Tokenizer {
 public:
  enum class Kind { SentencePiece, HuggingFace };
  // `model_bytes`: the .model file or the tokenizer.json; `config_bytes`: a tokenizer.json's tokenizer_config.json
  // ("" when there is none; ignored for SentencePiece); `source` names the file in errors. Throws rho::Error.
  static Tokenizer parse(Kind kind, const std::string& model_bytes, const std::string& config_bytes,
                         const std::string& source, SpTokenizer::Engine engine = SpTokenizer::Engine::Auto);
  // The kind from the file (is_hf_tokenizer_file); a tokenizer.json's tokenizer_config.json is read when beside it.
  static Tokenizer load(const std::string& path, SpTokenizer::Engine engine = SpTokenizer::Engine::Auto);
  ~Tokenizer();
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;

  std::vector<int> encode(const std::string& text);  // no BOS/EOS
  std::string decode(const std::vector<int>& ids) const;
  // One token as the kind stores it: SentencePiece's piece ("▁the", "<0x0A>"), a tokenizer.json token's text.
  std::string piece(int id) const;
  int64_t vocab_size() const;
  int64_t bos_id() const;  // -1 when there is none
  int64_t eos_id() const;
  Kind kind() const { return sp_ ? Kind::SentencePiece : Kind::HuggingFace; }

 private:
  Tokenizer() = default;
  std::unique_ptr<SpTokenizer> sp_;
  std::unique_ptr<HfTokenizer> hf_;
};

}  // namespace rho
