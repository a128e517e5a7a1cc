#pragma once
// HfTokenizer: a Hugging Face `tokenizer.json` with a byte-level BPE model (GPT-2, Llama 3, Qwen2, SmolLM2 and the
// tokenizers trained with the `tokenizers` library's ByteLevel BPE), encoding as the Rust `tokenizers` library does
// with add_special_tokens=False:
//   added tokens (special or not) are matched in the text first, leftmost-longest, and become their ids;
//   the normalizer (none or NFC), then the pre-tokenizers (Split on a regex or string, Digits, ByteLevel with or
//   without its GPT-2 regex, in sequence) cut the rest into words, mapped byte by byte to printable characters;
//   each word is merged by BPE rank (or taken whole with ignore_merges when it is in the vocabulary).
// byte_fallback (pieces missing from the vocabulary as <0xXX> tokens) is honoured; with a byte-level vocabulary it
// never triggers. Anything else in the file that would change the ids (another model type, other normalizers or
// pre-tokenizers, an added token with lstrip/rstrip/single_word) is refused by name. Regexes run on PCRE2 with
// Unicode properties; NFC comes from utf8proc.
//
// BOS is the special token the post-processor's template puts first (what transformers adds with
// add_special_tokens: Llama 3's <|begin_of_text|>; none for GPT-2, Qwen2, SmolLM2); EOS is tokenizer_config.json's
// eos_token when that file is beside the tokenizer, else the usual end-of-text token. encode() adds neither.
// An instance caches word encodings: use one per thread.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace rho {

class HfTokenizer {
 public:
  // `json_text` is the tokenizer.json; `config_text` the tokenizer_config.json ("" when there is none); `source`
  // names the file in errors.
  static HfTokenizer parse(const std::string& json_text, const std::string& config_text, const std::string& source);
  // Reads `path` and, when it exists, tokenizer_config.json beside it.
  static HfTokenizer load(const std::string& path);
  ~HfTokenizer();
  HfTokenizer(HfTokenizer&&) noexcept;
  HfTokenizer& operator=(HfTokenizer&&) noexcept;

  std::vector<int> encode(const std::string& text) const;
  std::string decode(const std::vector<int>& ids) const;
  std::string piece(int id) const;  // the token's text (bytes decoded; special tokens as written)
  int64_t vocab_size() const;       // largest id + 1
  int64_t bos_id() const;           // -1 when there is none
  int64_t eos_id() const;

 private:
  HfTokenizer();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// True when `path` names a Hugging Face tokenizer.json (by its extension) rather than a SentencePiece model.
bool is_hf_tokenizer_file(const std::string& path);

}  // namespace rho
