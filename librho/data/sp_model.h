#pragma once
// The parts of a SentencePiece model (.model, a serialized ModelProto) that librho's own encoders need, read
// without the library, and SentencePiece's normaliser (internal to librho_data; SpTokenizer is the public face):
//
//   read_model     pieces, scores and types, the model type, byte_fallback, treat_whitespace_as_suffix and the
//                  NormalizerSpec, from protobuf's wire format (every read bounds-checked);
//   CharsMap       a precompiled rule table (nmt_nfkc, nfkc_cf, ...): a darts-clone double array over UTF-8 whose
//                  longest matching key gives a replacement string;
//   Normalizer     SentencePiece's Normalizer::Normalize: rules (or one character at a time, malformed bytes to
//                  U+FFFD), heading/trailing/repeated whitespace removal, the dummy prefix, escaping to U+2581.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace rho::sp {

enum PieceType : uint8_t { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };
enum ModelType : int { kUnigram = 1, kBpe = 2, kWord = 3, kChar = 4 };

inline constexpr std::string_view kSpaceSymbol = "\xe2\x96\x81";  // U+2581, SentencePiece's escaped space

struct ModelInfo {
  std::vector<std::string> pieces;
  std::vector<float> scores;
  std::vector<uint8_t> types;
  int model_type = kUnigram;
  bool byte_fallback = false;
  bool treat_whitespace_as_suffix = false;
  std::string normalizer_name;
  std::string charsmap;  // NormalizerSpec.precompiled_charsmap: empty without rules
  bool add_dummy_prefix = true;
  bool remove_extra_whitespaces = true;
  bool escape_whitespaces = true;
};

// False when `bytes` is not a well-formed ModelProto as far as these fields go.
bool read_model(std::string_view bytes, ModelInfo* m);

class CharsMap {
 public:
  // The table in `blob` (<uint32 trie bytes><double array><NUL-terminated replacements>), or false with `reason`.
  bool parse(std::string_view blob, std::string* reason);
  bool empty() const { return units_.empty(); }
  // The longest key that is a prefix of `s`: its length in bytes (0: none) and its replacement.
  size_t longest_match(std::string_view s, std::string_view* replacement) const;
  // Whether some key starts with byte `b` (when none does, a character starting with it is left as it is).
  bool may_start(unsigned char b) const { return starts_[b]; }

 private:
  std::vector<uint32_t> units_;
  std::string replacements_;
  bool starts_[256] = {};
};

class Normalizer {
 public:
  Normalizer() = default;
  // `m`'s NormalizerSpec and whitespace options; false with `reason` when its rule table cannot be read.
  bool init(const ModelInfo& m, std::string* reason);
  // SentencePiece's Normalize(in) into `out` (cleared first).
  void normalize(std::string_view in, std::string* out) const;
  bool has_rules() const { return !rules_.empty(); }
  std::string_view space() const { return space_; }  // "▁", or " " without escape_whitespaces
  bool suffix() const { return suffix_; }

 private:
  std::string_view prefix(std::string_view in, size_t* consumed) const;

  CharsMap rules_;
  bool add_dummy_prefix_ = true, remove_extra_whitespaces_ = true, escape_ = true, suffix_ = false;
  std::string_view space_ = kSpaceSymbol;
};

}  // namespace rho::sp
