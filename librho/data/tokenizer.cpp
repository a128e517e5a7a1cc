#include "librho/data/tokenizer.h"

#include "librho/data/hf_tokenizer.h"
#include "librho/util/files.h"

namespace rho {

Tokenizer Tokenizer::parse(Kind kind, const std::string& model_bytes, const std::string& config_bytes,
                           const std::string& source, SpTokenizer::Engine engine) {
  Tokenizer t;
  if (kind == Kind::HuggingFace)
    t.hf_ = std::make_unique<HfTokenizer>(HfTokenizer::parse(model_bytes, config_bytes, source));
  else
    t.sp_ = std::make_unique<SpTokenizer>(SpTokenizer::parse(model_bytes, source, engine));
  return t;
}

Tokenizer Tokenizer::load(const std::string& path, SpTokenizer::Engine engine) {
  Tokenizer t;
  if (is_hf_tokenizer_file(path))
    t.hf_ = std::make_unique<HfTokenizer>(HfTokenizer::load(path));
  else
    t.sp_ = std::make_unique<SpTokenizer>(SpTokenizer::load(path, engine));
  return t;
}

Tokenizer::~Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;

std::vector<int> Tokenizer::encode(const std::string& text) { return sp_ ? sp_->encode(text) : hf_->encode(text); }
std::string Tokenizer::decode(const std::vector<int>& ids) const { return sp_ ? sp_->decode(ids) : hf_->decode(ids); }
std::string Tokenizer::piece(int id) const { return sp_ ? sp_->piece(id) : hf_->piece(id); }
int64_t Tokenizer::vocab_size() const { return sp_ ? sp_->vocab_size() : hf_->vocab_size(); }
int64_t Tokenizer::bos_id() const { return sp_ ? sp_->bos_id() : hf_->bos_id(); }
int64_t Tokenizer::eos_id() const { return sp_ ? sp_->eos_id() : hf_->eos_id(); }

}  // namespace rho
