#include "librho/data/sp_tokenizer.h"

#include <fmt/format.h>
#include <sentencepiece_processor.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <unordered_map>

#include "librho/util/error.h"
#include "librho/util/files.h"
#include "librho/util/text.h"

namespace rho {
namespace {

constexpr std::string_view kSpaceSymbol = "\xe2\x96\x81";  // U+2581, SentencePiece's escaped space
constexpr std::string_view kReplacement = "\xef\xbf\xbd";  // U+FFFD, what a malformed byte normalises to

// ---- The parts of a serialized ModelProto the encoder needs (field numbers of sentencepiece_model.proto) ----

enum PieceType : uint8_t { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };
enum ModelType : int { kUnigram = 1, kBpe = 2, kWord = 3, kChar = 4 };

struct ModelInfo {
  std::vector<std::string> pieces;
  std::vector<float> scores;
  std::vector<uint8_t> types;
  int model_type = kUnigram;
  bool byte_fallback = false;
  bool treat_whitespace_as_suffix = false;
  std::string normalizer_name;
  bool precompiled_rules = false;
  bool add_dummy_prefix = true;
  bool remove_extra_whitespaces = true;
  bool escape_whitespaces = true;
};

// Protocol buffers' wire format, as far as the fields above need it. Every read checks the bounds.
class Wire {
 public:
  explicit Wire(std::string_view s) : p_(s.data()), end_(s.data() + s.size()) {}
  bool done() const { return p_ == end_; }
  bool varint(uint64_t* v) {
    *v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (p_ == end_) return false;
      const auto b = static_cast<uint8_t>(*p_++);
      *v |= static_cast<uint64_t>(b & 0x7F) << shift;
      if (!(b & 0x80)) return true;
    }
    return false;
  }
  bool tag(uint32_t* field, uint32_t* type) {
    uint64_t t;
    if (!varint(&t)) return false;
    *field = static_cast<uint32_t>(t >> 3);
    *type = static_cast<uint32_t>(t & 7);
    return true;
  }
  bool bytes(std::string_view* v) {
    uint64_t n;
    if (!varint(&n) || n > static_cast<uint64_t>(end_ - p_)) return false;
    *v = std::string_view(p_, static_cast<size_t>(n));
    p_ += n;
    return true;
  }
  bool fixed32(uint32_t* v) {
    if (end_ - p_ < 4) return false;
    std::memcpy(v, p_, 4);  // little-endian on every platform librho builds for
    p_ += 4;
    return true;
  }
  bool skip(uint32_t type) {
    uint64_t v;
    std::string_view s;
    uint32_t f;
    switch (type) {
      case 0: return varint(&v);
      case 1: return end_ - p_ >= 8 ? (p_ += 8, true) : false;
      case 2: return bytes(&s);
      case 5: return fixed32(&f);
      default: return false;  // groups are not used by sentencepiece_model.proto
    }
  }

 private:
  const char* p_;
  const char* end_;
};

// Calls `on(field, type, wire)` for each field of a message; false when the message is malformed or `on` fails.
template <typename F>
bool for_each_field(std::string_view message, F on) {
  Wire w(message);
  while (!w.done()) {
    uint32_t field, type;
    if (!w.tag(&field, &type) || !on(field, type, w)) return false;
  }
  return true;
}

bool read_bool(Wire& w, bool* out) {
  uint64_t v;
  if (!w.varint(&v)) return false;
  *out = v != 0;
  return true;
}

bool read_piece(std::string_view message, ModelInfo* m) {
  std::string_view piece;
  float score = 0;
  uint64_t type = kNormal;
  const bool ok = for_each_field(message, [&](uint32_t field, uint32_t t, Wire& w) {
    if (field == 1 && t == 2) return w.bytes(&piece);
    if (field == 2 && t == 5) {
      uint32_t bits;
      if (!w.fixed32(&bits)) return false;
      std::memcpy(&score, &bits, 4);
      return true;
    }
    if (field == 3 && t == 0) return w.varint(&type);
    return w.skip(t);
  });
  m->pieces.emplace_back(piece);
  m->scores.push_back(score);
  m->types.push_back(static_cast<uint8_t>(type));
  return ok && type >= kNormal && type <= kByte;
}

bool read_model(std::string_view bytes, ModelInfo* m) {
  return for_each_field(bytes, [&](uint32_t field, uint32_t t, Wire& w) {
    std::string_view sub;
    if (t != 2 || field < 1 || field > 3) return w.skip(t);
    if (!w.bytes(&sub)) return false;
    if (field == 1) return read_piece(sub, m);
    if (field == 2) {  // TrainerSpec
      return for_each_field(sub, [&](uint32_t f, uint32_t ft, Wire& tw) {
        uint64_t v;
        if (f == 3 && ft == 0) return tw.varint(&v) ? (m->model_type = static_cast<int>(v), true) : false;
        if (f == 24 && ft == 0) return read_bool(tw, &m->treat_whitespace_as_suffix);
        if (f == 35 && ft == 0) return read_bool(tw, &m->byte_fallback);
        return tw.skip(ft);
      });
    }
    return for_each_field(sub, [&](uint32_t f, uint32_t ft, Wire& nw) {  // NormalizerSpec
      std::string_view s;
      if (f == 1 && ft == 2) return nw.bytes(&s) ? (m->normalizer_name = std::string(s), true) : false;
      if (f == 2 && ft == 2) return nw.bytes(&s) ? (m->precompiled_rules = !s.empty(), true) : false;
      if (f == 3 && ft == 0) return read_bool(nw, &m->add_dummy_prefix);
      if (f == 4 && ft == 0) return read_bool(nw, &m->remove_extra_whitespaces);
      if (f == 5 && ft == 0) return read_bool(nw, &m->escape_whitespaces);
      return nw.skip(ft);
    });
  });
}

// ---- The encoder ----

class BpeEncoder {
 public:
  // The encoder for `m`, or nullptr with `reason` set when the model needs SentencePiece's own code.
  static std::unique_ptr<BpeEncoder> make(ModelInfo m, std::string* reason);
  void encode(std::string_view text, std::vector<int>* ids);

 private:
  struct Symbol {
    int start, len, prev, next, id;
  };
  struct Candidate {  // an adjacent pair whose concatenation is a piece
    float score;
    int left, right, len, id;
  };
  // The heap's order: the best candidate on top, the highest score and then the leftmost.
  static bool below(const Candidate& a, const Candidate& b) {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  }

  void normalize(std::string_view text);
  template <typename F>
  void for_each_word(std::string_view s, F f) const;
  void append_word(std::string_view word, std::vector<int>* ids);
  void merge_word(std::string_view word, std::vector<int>* out);
  void add_candidate(std::string_view word, int left, int right);
  int char_id(std::string_view ch) const;
  bool word_boundary_in(std::string_view piece) const;

  std::vector<std::string> pieces_;
  std::vector<float> scores_;
  std::unordered_map<std::string_view, int> normal_;    // pieces a merge may produce
  std::unordered_map<std::string_view, int> reserved_;  // control, unknown and byte pieces
  int unk_id_ = -1;
  bool byte_fallback_ = false;
  int byte_id_[256] = {};
  bool add_dummy_prefix_ = true, remove_extra_whitespaces_ = true, suffix_ = false;
  std::string_view space_;  // "▁", or " " without escape_whitespaces
  bool split_words_ = false;

  // Per call scratch, kept to avoid allocations.
  std::string norm_;
  std::vector<Symbol> symbols_;
  std::vector<Candidate> heap_;
  std::vector<int> word_ids_;

  // Word -> ids. Keys live in blocks_; values in cached_ids_. Cleared whole when it reaches kMaxWords.
  static constexpr size_t kMaxWords = 1 << 18;
  static constexpr size_t kMaxWordBytes = 64;
  static constexpr size_t kBlockBytes = 1 << 16;
  std::unordered_map<std::string_view, std::pair<uint32_t, uint32_t>> cache_;
  std::vector<std::unique_ptr<char[]>> blocks_;
  size_t block_used_ = kBlockBytes;
  std::vector<int> cached_ids_;
};

const char* model_type_name(int t) {
  switch (t) {
    case kUnigram: return "unigram";
    case kWord: return "word";
    case kChar: return "char";
    default: return "unknown-type";
  }
}

std::unique_ptr<BpeEncoder> BpeEncoder::make(ModelInfo m, std::string* reason) {
  if (m.model_type != kBpe) {
    *reason = fmt::format("a {} model (librho's encoder is for BPE models)", model_type_name(m.model_type));
    return nullptr;
  }
  if (m.precompiled_rules) {
    *reason = fmt::format("normalisation rules ('{}') are applied by the library", m.normalizer_name);
    return nullptr;
  }
  std::unique_ptr<BpeEncoder> e(new BpeEncoder);
  e->pieces_ = std::move(m.pieces);
  e->scores_ = std::move(m.scores);
  e->byte_fallback_ = m.byte_fallback;
  e->add_dummy_prefix_ = m.add_dummy_prefix;
  e->remove_extra_whitespaces_ = m.remove_extra_whitespaces;
  e->suffix_ = m.treat_whitespace_as_suffix;
  e->space_ = m.escape_whitespaces ? kSpaceSymbol : std::string_view(" ");
  std::fill(std::begin(e->byte_id_), std::end(e->byte_id_), -1);
  for (size_t i = 0; i < e->pieces_.size(); ++i) {
    const std::string_view p = e->pieces_[i];
    const int id = static_cast<int>(i);
    switch (m.types[i]) {
      case kUserDefined: *reason = "user-defined pieces (matched before merging) are handled by the library"; return nullptr;
      case kUnused: *reason = "unused pieces (resegmented) are handled by the library"; return nullptr;
      case kNormal: e->normal_.emplace(p, id); break;
      case kUnknown: e->unk_id_ = id; e->reserved_.emplace(p, id); break;
      case kByte:
        e->reserved_.emplace(p, id);
        if (p.size() == 6 && p.substr(0, 3) == "<0x" && p[5] == '>')
          e->byte_id_[std::stoi(std::string(p.substr(3, 2)), nullptr, 16)] = id;
        break;
      default: e->reserved_.emplace(p, id); break;  // control
    }
  }
  for (const auto& [piece, id] : e->reserved_) {
    // A control piece that is one character, or any reserved piece that is also a normal piece, takes paths of
    // the library's (errors, lookup order) that this encoder does not follow.
    const bool one_char = utf8_lead_size(static_cast<unsigned char>(piece[0])) == piece.size();
    if (e->normal_.count(piece) || (one_char && m.types[static_cast<size_t>(id)] == kControl)) {
      *reason = fmt::format("the reserved piece '{}' can be produced from text", piece);
      return nullptr;
    }
  }
  // SentencePiece 0.1.97 orders candidates by `<` on their scores, 0.2.x by a total order on the float's bits: they
  // agree unless a score is NaN (no strict weak order either, so cutting into words would not be exact) or the
  // vocabulary holds both -0.0 and +0.0. Trained models have neither; such a vocabulary goes to the library.
  bool negative_zero = false, positive_zero = false;
  for (const auto& [piece, id] : e->normal_) {
    const float score = e->scores_[static_cast<size_t>(id)];
    if (std::isnan(score)) {
      *reason = fmt::format("the piece '{}' has a NaN score", piece);
      return nullptr;
    }
    if (score == 0.0f) (std::signbit(score) ? negative_zero : positive_zero) = true;
  }
  if (negative_zero && positive_zero) {
    *reason = "scores of both -0.0 and +0.0 (SentencePiece versions order them differently)";
    return nullptr;
  }
  if (e->unk_id_ < 0) {
    *reason = "the model has no unknown piece";
    return nullptr;
  }
  if (e->byte_fallback_ && std::count(std::begin(e->byte_id_), std::end(e->byte_id_), -1) > 0) {
    *reason = "byte_fallback without all 256 byte pieces";
    return nullptr;
  }
  e->split_words_ = std::none_of(e->normal_.begin(), e->normal_.end(),
                                 [&](const auto& kv) { return e->word_boundary_in(kv.first); });
  return e;
}

// Whether `piece` holds two characters between which for_each_word would cut: a non-space followed by a space
// (or, with treat_whitespace_as_suffix, a space followed by a non-space). When no piece does, no merge can cross
// a cut, and encoding word by word equals encoding the whole text.
bool BpeEncoder::word_boundary_in(std::string_view piece) const {
  const size_t n = space_.size();
  for (size_t at = piece.find(space_); at != std::string_view::npos; at = piece.find(space_, at + n)) {
    if (!suffix_ && at > 0 && !(at >= n && piece.substr(at - n, n) == space_)) return true;
    if (suffix_ && at + n < piece.size() && piece.substr(at + n, n) != space_) return true;
  }
  return false;
}

// SentencePiece's Normalizer::Normalize for a spec without rules or user-defined symbols.
void BpeEncoder::normalize(std::string_view in) {
  norm_.clear();
  size_t i = 0;
  if (remove_extra_whitespaces_)
    while (i < in.size() && in[i] == ' ') ++i;
  if (i == in.size()) return;
  if (!suffix_ && add_dummy_prefix_) norm_ += space_;
  bool prev_space = remove_extra_whitespaces_;
  const auto* s = reinterpret_cast<const unsigned char*>(in.data());
  while (i < in.size()) {
    if (s[i] == ' ') {
      if (!prev_space) norm_ += space_;
      prev_space = remove_extra_whitespaces_;
      ++i;
      continue;
    }
    prev_space = false;
    if (s[i] < 0x80) {
      norm_ += static_cast<char>(s[i++]);
      continue;
    }
    const size_t len = utf8_char_size(s + i, in.size() - i);  // SentencePiece's DecodeUTF8 validity
    if (len == 0) {
      norm_ += kReplacement;
      ++i;
    } else {
      norm_.append(in.data() + i, len);
      i += len;
    }
  }
  if (remove_extra_whitespaces_)
    while (norm_.size() >= space_.size() && std::string_view(norm_).substr(norm_.size() - space_.size()) == space_)
      norm_.resize(norm_.size() - space_.size());
  if (suffix_ && add_dummy_prefix_) norm_ += space_;
}

// Calls f(word) for each word of the normalised text: spaces then other characters (spaces after them with
// treat_whitespace_as_suffix). Without split_words_, the whole text is one word.
template <typename F>
void BpeEncoder::for_each_word(std::string_view s, F f) const {
  if (!split_words_) {
    if (!s.empty()) f(s);
    return;
  }
  const size_t n = space_.size();
  auto at_space = [&](size_t i) { return s.compare(i, n, space_) == 0; };
  size_t i = 0;
  while (i < s.size()) {
    const size_t begin = i;
    if (!suffix_)
      while (i < s.size() && at_space(i)) i += n;
    i = std::min(s.find(space_, i), s.size());
    if (suffix_)
      while (i < s.size() && at_space(i)) i += n;
    f(s.substr(begin, i - begin));
  }
}

int BpeEncoder::char_id(std::string_view ch) const {  // SentencePiece's PieceToId: reserved pieces first
  if (const auto it = reserved_.find(ch); it != reserved_.end()) return it->second;
  if (const auto it = normal_.find(ch); it != normal_.end()) return it->second;
  return unk_id_;
}

void BpeEncoder::add_candidate(std::string_view word, int left, int right) {
  if (left < 0 || right < 0) return;
  const Symbol& l = symbols_[static_cast<size_t>(left)];
  const Symbol& r = symbols_[static_cast<size_t>(right)];
  const auto it = normal_.find(word.substr(static_cast<size_t>(l.start), static_cast<size_t>(l.len + r.len)));
  if (it == normal_.end()) return;
  heap_.push_back({scores_[static_cast<size_t>(it->second)], left, right, l.len + r.len, it->second});
  std::push_heap(heap_.begin(), heap_.end(), below);
}

// SentencePiece's bpe::Model::Encode on one word; appends the ids (unknown runs handled as the library's ids).
void BpeEncoder::merge_word(std::string_view word, std::vector<int>* out) {
  symbols_.clear();
  heap_.clear();
  for (size_t i = 0; i < word.size();) {
    const size_t len = std::min(utf8_lead_size(static_cast<unsigned char>(word[i])), word.size() - i);
    const int index = static_cast<int>(symbols_.size());
    symbols_.push_back({static_cast<int>(i), static_cast<int>(len), index - 1, index + 1,
                        char_id(word.substr(i, len))});
    i += len;
  }
  symbols_.back().next = -1;
  for (size_t i = 1; i < symbols_.size(); ++i) add_candidate(word, static_cast<int>(i - 1), static_cast<int>(i));
  while (!heap_.empty()) {
    std::pop_heap(heap_.begin(), heap_.end(), below);
    const Candidate top = heap_.back();
    heap_.pop_back();
    Symbol& l = symbols_[static_cast<size_t>(top.left)];
    Symbol& r = symbols_[static_cast<size_t>(top.right)];
    if (l.len == 0 || r.len == 0 || l.len + r.len != top.len) continue;  // stale: a side merged since
    l.len = top.len;
    l.id = top.id;
    l.next = r.next;
    if (r.next >= 0) symbols_[static_cast<size_t>(r.next)].prev = top.left;
    r.len = 0;
    add_candidate(word, l.prev, top.left);
    add_candidate(word, top.left, l.next);
  }
  bool prev_unknown = false;
  for (int i = 0; i >= 0; i = symbols_[static_cast<size_t>(i)].next) {
    const Symbol& s = symbols_[static_cast<size_t>(i)];
    if (s.id != unk_id_) {
      out->push_back(s.id);
    } else if (byte_fallback_) {
      for (int b = 0; b < s.len; ++b) out->push_back(byte_id_[static_cast<unsigned char>(word[s.start + b])]);
    } else if (!prev_unknown) {
      out->push_back(unk_id_);  // a run of unknown symbols is one unknown piece
    }
    prev_unknown = s.id == unk_id_;
  }
}

void BpeEncoder::append_word(std::string_view word, std::vector<int>* ids) {
  const int* first;
  size_t count;
  if (word.size() > kMaxWordBytes) {
    word_ids_.clear();
    merge_word(word, &word_ids_);
    first = word_ids_.data();
    count = word_ids_.size();
  } else {
    auto it = cache_.find(word);
    if (it == cache_.end()) {
      if (cache_.size() >= kMaxWords) {
        cache_.clear();
        cached_ids_.clear();
        blocks_.clear();
        block_used_ = kBlockBytes;
      }
      if (block_used_ + word.size() > kBlockBytes) {
        blocks_.emplace_back(new char[kBlockBytes]);
        block_used_ = 0;
      }
      char* key = blocks_.back().get() + block_used_;
      std::memcpy(key, word.data(), word.size());
      block_used_ += word.size();
      const auto offset = static_cast<uint32_t>(cached_ids_.size());
      merge_word(word, &cached_ids_);
      it = cache_.emplace(std::string_view(key, word.size()),
                          std::make_pair(offset, static_cast<uint32_t>(cached_ids_.size() - offset))).first;
    }
    first = cached_ids_.data() + it->second.first;
    count = it->second.second;
  }
  // Without byte_fallback a run of unknown symbols gives one unk, across words too.
  if (count > 0 && !byte_fallback_ && first[0] == unk_id_ && !ids->empty() && ids->back() == unk_id_) ++first, --count;
  ids->insert(ids->end(), first, first + count);
}

void BpeEncoder::encode(std::string_view text, std::vector<int>* ids) {
  ids->clear();
  normalize(text);
  for_each_word(norm_, [&](std::string_view word) { append_word(word, ids); });
}

}  // namespace

struct SpTokenizer::Impl {
  sentencepiece::SentencePieceProcessor sp;
  std::unique_ptr<BpeEncoder> bpe;
  std::string source;
  std::string library_reason;
};

SpTokenizer::SpTokenizer() : impl_(std::make_unique<Impl>()) {}
SpTokenizer::~SpTokenizer() = default;
SpTokenizer::SpTokenizer(SpTokenizer&&) noexcept = default;
SpTokenizer& SpTokenizer::operator=(SpTokenizer&&) noexcept = default;

SpTokenizer SpTokenizer::parse(const std::string& model_bytes, const std::string& source, Engine engine) {
  SpTokenizer t;
  t.impl_->source = source;
  const auto status = t.impl_->sp.LoadFromSerializedProto(model_bytes);
  if (!status.ok()) throw Error(fmt::format("{}: not a SentencePiece model ({})", source, status.ToString()));
  ModelInfo info;
  if (engine == Engine::Library) {
    t.impl_->library_reason = "the library was asked for";
  } else if (!read_model(model_bytes, &info)) {
    t.impl_->library_reason = "librho's reader could not read the model file";
  } else {
    t.impl_->bpe = BpeEncoder::make(std::move(info), &t.impl_->library_reason);
  }
  return t;
}

SpTokenizer SpTokenizer::load(const std::string& path, Engine engine) {
  return parse(read_text_file(path), path, engine);
}

std::vector<int> SpTokenizer::encode(std::string_view text) {
  // Both encoders index characters with int, and normalising can triple the text.
  constexpr size_t kMaxBytes = INT_MAX / 3;
  if (text.size() > kMaxBytes)
    throw Error(fmt::format("{}: a text of {} bytes is more than SentencePiece encodes at once ({} bytes)",
                            impl_->source, text.size(), kMaxBytes));
  std::vector<int> ids;
  if (impl_->bpe) {
    impl_->bpe->encode(text, &ids);
    return ids;
  }
  const auto status = impl_->sp.Encode(text, &ids);
  if (!status.ok()) throw Error(fmt::format("{}: encoding failed ({})", impl_->source, status.ToString()));
  return ids;
}

std::string SpTokenizer::decode(const std::vector<int>& ids) const {
  std::string text;
  const auto status = impl_->sp.Decode(ids, &text);
  if (!status.ok()) throw Error(fmt::format("{}: decoding failed ({})", impl_->source, status.ToString()));
  return text;
}

std::string SpTokenizer::piece(int id) const {
  if (id < 0 || id >= impl_->sp.GetPieceSize())  // the library does not check
    throw Error(fmt::format("{}: token id {} is outside the vocabulary (size {})", impl_->source, id,
                            impl_->sp.GetPieceSize()));
  return impl_->sp.IdToPiece(id);
}
int64_t SpTokenizer::vocab_size() const { return impl_->sp.GetPieceSize(); }
int64_t SpTokenizer::bos_id() const { return impl_->sp.bos_id(); }
int64_t SpTokenizer::eos_id() const { return impl_->sp.eos_id(); }
bool SpTokenizer::own_encoder() const { return impl_->bpe != nullptr; }
const std::string& SpTokenizer::library_reason() const { return impl_->library_reason; }

}  // namespace rho
