#pragma once
// SpTokenizer: a SentencePiece model (.model file) for encoding and decoding, with librho's own encoders for BPE
// and unigram models. Encoding returns exactly the ids of SentencePieceProcessor::Encode as a standard build of
// SentencePiece computes them (no sampling, no BOS/EOS):
//
//   normalise      the model's NormalizerSpec (sp_model.h): its rule table (nmt_nfkc, nfkc_cf, ...) if any,
//                  dummy prefix, whitespace removal and escaping to U+2581, malformed UTF-8 bytes to U+FFFD;
//   BPE            the text cut into words where no piece of the vocabulary can span the cut (checked against
//                  every piece when the model is loaded; without that guarantee the text is one word), each word
//                  merged by SentencePiece's rule (repeatedly join the adjacent pair whose concatenation is a
//                  piece with the highest score, the leftmost on ties), word encodings cached (bounded);
//   unigram        SentencePiece's Viterbi over the whole text: a byte trie of the pieces, each piece's score added
//                  to the best path before it as the library adds it (double, kept as float), strictly higher
//                  wins, a character no piece covers is unknown at the lowest score - 10;
//   unknowns       an unknown piece becomes its UTF-8 bytes' <0xXX> pieces under byte_fallback, else unk, with a
//                  run of unknown pieces giving one unk as SentencePiece's ids do.
//
// An instance keeps scratch space and the BPE word cache, so it is for one thread at a time. Models that need the
// library's general machinery (word and char models, user-defined pieces, unused pieces in BPE models, a NaN
// score, BPE scores of both -0.0 and +0.0, on which SentencePiece versions disagree) are encoded by the
// SentencePiece library itself; library_reason() says why. ctest tokenize_parity and rho_tests "[sp]" compare the
// two id for id.
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace rho {

class SpTokenizer {
 public:
  enum class Engine { Auto, Library };  // Auto: librho's encoder where it applies; Library: always SentencePiece's
  // `model_bytes` is a serialized ModelProto; `source` names it in errors (throws rho::Error when it is not one).
  static SpTokenizer parse(const std::string& model_bytes, const std::string& source, Engine engine = Engine::Auto);
  static SpTokenizer load(const std::string& path, Engine engine = Engine::Auto);
  ~SpTokenizer();
  SpTokenizer(SpTokenizer&&) noexcept;
  SpTokenizer& operator=(SpTokenizer&&) noexcept;

  std::vector<int> encode(std::string_view text);  // not const: the word cache
  std::string decode(const std::vector<int>& ids) const;
  std::string piece(int id) const;  // the piece as stored ("▁the", "<0x0A>"); throws outside the vocabulary
  int64_t vocab_size() const;
  int64_t bos_id() const;  // -1 when the model has none
  int64_t eos_id() const;
  bool own_encoder() const;                   // true: librho's BPE or unigram encoder; false: the library's
  const std::string& library_reason() const;  // why the library encodes (empty with own_encoder())

 private:
  SpTokenizer();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace rho
