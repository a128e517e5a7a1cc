#include "librho/data/sp_tokenizer.h"

#include "librho/data/sp_model.h"

#include <fmt/format.h>
#include <sentencepiece_processor.h>

#include <algorithm>
#include <array>
#include <climits>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <unordered_map>

#include "librho/util/error.h"
#include "librho/util/files.h"
#include "librho/util/text.h"

namespace rho {
namespace {

using namespace sp;

// What both of librho's encoders share: the normaliser, the reserved pieces (unknown, bytes) and how an unknown
// piece becomes ids, as SentencePieceProcessor's PopulateSentencePieceText makes them.
class SpEncoder {
 public:
  virtual ~SpEncoder() = default;
  // The ids of `text`; false when it normalises to more than kMaxNormalized bytes (positions are int32).
  bool encode(std::string_view text, std::vector<int>* ids) {
    ids->clear();
    normalizer_.normalize(text, &norm_);
    if (norm_.size() > kMaxNormalized) return false;
    encode_normalized(norm_, ids);
    return true;
  }
  static constexpr size_t kMaxNormalized = INT_MAX - 1;

 protected:
  // Appends the ids of normalised text `s` to `ids`.
  virtual void encode_normalized(std::string_view s, std::vector<int>* ids) = 0;
  // The normaliser, the unknown piece and the byte pieces of `m`; false with `reason` when one is missing.
  bool init(const ModelInfo& m, std::string* reason);
  // Appends the ids of an unknown piece covering normalised `text`: its UTF-8 bytes' <0xXX> pieces under
  // byte_fallback, else unk, with a run of unknown pieces giving one unk (`ids` may end with the run so far; only
  // ids from index `from` on count as the run).
  void append_unknown(std::string_view text, std::vector<int>* ids, size_t from = 0) const {
    if (byte_fallback_) {
      for (const char b : text) ids->push_back(byte_id_[static_cast<unsigned char>(b)]);
    } else if (ids->size() == from || ids->back() != unk_id_) {
      ids->push_back(unk_id_);
    }
  }

  Normalizer normalizer_;
  int unk_id_ = -1;
  bool byte_fallback_ = false;
  int byte_id_[256] = {};

 private:
  std::string norm_;  // per call scratch
};

bool SpEncoder::init(const ModelInfo& m, std::string* reason) {
  if (!normalizer_.init(m, reason)) return false;
  byte_fallback_ = m.byte_fallback;
  std::fill(std::begin(byte_id_), std::end(byte_id_), -1);
  for (size_t i = 0; i < m.pieces.size(); ++i) {
    const std::string_view p = m.pieces[i];
    if (m.types[i] == kUnknown) unk_id_ = static_cast<int>(i);
    if (m.types[i] == kByte && p.size() == 6 && p.substr(0, 3) == "<0x" && p[5] == '>')
      byte_id_[std::stoi(std::string(p.substr(3, 2)), nullptr, 16)] = static_cast<int>(i);
  }
  if (unk_id_ < 0) {
    *reason = "the model has no unknown piece";
    return false;
  }
  if (byte_fallback_ && std::count(std::begin(byte_id_), std::end(byte_id_), -1) > 0) {
    *reason = "byte_fallback without all 256 byte pieces";
    return false;
  }
  return true;
}

// The first NaN score of `m`'s normal pieces, with its piece, or false.
bool nan_score(const ModelInfo& m, std::string* reason) {
  for (size_t i = 0; i < m.pieces.size(); ++i) {
    if (m.types[i] == kNormal && std::isnan(m.scores[i])) {
      *reason = fmt::format("the piece '{}' has a NaN score", m.pieces[i]);
      return true;
    }
  }
  return false;
}

// ---- BPE ----

class BpeEncoder : public SpEncoder {
 public:
  // The encoder for `m`, or nullptr with `reason` set when the model needs SentencePiece's own code.
  static std::unique_ptr<BpeEncoder> make(ModelInfo m, std::string* reason);

 private:
  void encode_normalized(std::string_view s, std::vector<int>* ids) override;
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
  bool split_words_ = false;

  // Per call scratch, kept to avoid allocations.
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

std::unique_ptr<BpeEncoder> BpeEncoder::make(ModelInfo m, std::string* reason) {
  std::unique_ptr<BpeEncoder> e(new BpeEncoder);
  if (!e->init(m, reason) || nan_score(m, reason)) return nullptr;
  e->pieces_ = std::move(m.pieces);
  e->scores_ = std::move(m.scores);
  for (size_t i = 0; i < e->pieces_.size(); ++i) {
    const std::string_view p = e->pieces_[i];
    const int id = static_cast<int>(i);
    switch (m.types[i]) {
      case kUserDefined: *reason = "user-defined pieces (matched before merging) are handled by the library"; return nullptr;
      case kUnused: *reason = "unused pieces (resegmented) are handled by the library"; return nullptr;
      case kNormal: e->normal_.emplace(p, id); break;
      default: e->reserved_.emplace(p, id); break;  // control, unknown, byte
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
    if (score == 0.0f) (std::signbit(score) ? negative_zero : positive_zero) = true;
  }
  if (negative_zero && positive_zero) {
    *reason = "scores of both -0.0 and +0.0 (SentencePiece versions order them differently)";
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
  const std::string_view space = normalizer_.space();
  const bool suffix = normalizer_.suffix();
  const size_t n = space.size();
  for (size_t at = piece.find(space); at != std::string_view::npos; at = piece.find(space, at + n)) {
    if (!suffix && at > 0 && !(at >= n && piece.substr(at - n, n) == space)) return true;
    if (suffix && at + n < piece.size() && piece.substr(at + n, n) != space) return true;
  }
  return false;
}

// Calls f(word) for each word of the normalised text: spaces then other characters (spaces after them with
// treat_whitespace_as_suffix). Without split_words_, the whole text is one word.
template <typename F>
void BpeEncoder::for_each_word(std::string_view s, F f) const {
  if (!split_words_) {
    if (!s.empty()) f(s);
    return;
  }
  const std::string_view space = normalizer_.space();
  const bool suffix = normalizer_.suffix();
  const size_t n = space.size();
  auto at_space = [&](size_t i) { return s.compare(i, n, space) == 0; };
  size_t i = 0;
  while (i < s.size()) {
    const size_t begin = i;
    if (!suffix)
      while (i < s.size() && at_space(i)) i += n;
    i = std::min(s.find(space, i), s.size());
    if (suffix)
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
  const size_t first = out->size();
  for (int i = 0; i >= 0; i = symbols_[static_cast<size_t>(i)].next) {
    const Symbol& s = symbols_[static_cast<size_t>(i)];
    if (s.id != unk_id_)
      out->push_back(s.id);
    else  // `out` may hold other (cached) words: runs across words are joined in append_word
      append_unknown(word.substr(static_cast<size_t>(s.start), static_cast<size_t>(s.len)), out, first);
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

void BpeEncoder::encode_normalized(std::string_view s, std::vector<int>* ids) {
  for_each_word(s, [&](std::string_view word) { append_word(word, ids); });
}

// ---- Unigram ----

// SentencePiece's unigram::Model::EncodeOptimized (the library's default encoder): a Viterbi pass over the whole
// normalised text, one character position at a time. Every piece that starts there (found by walking a byte trie
// of the vocabulary) proposes "best score up to its start + its score" for the position where it ends, and
// replaces that position's best only when strictly higher (so on ties the earlier start, then the shorter piece,
// keeps it); a character no one-character piece covers is proposed as unknown at min score - 10. Sums are formed
// as the library forms them (a piece's score plus the best before it in double, compared with the kept float and
// rounded to float when kept; an unknown's in float), so the same path wins where rounding decides, as it does
// in long texts. No word cache: where the text is cut changes those sums.
class UnigramEncoder : public SpEncoder {
 public:
  static std::unique_ptr<UnigramEncoder> make(const ModelInfo& m, std::string* reason);

 private:
  void encode_normalized(std::string_view s, std::vector<int>* ids) override;
  // A trie node, 16 bytes; a node's children are consecutive nodes, sorted by label, so a walk reads each
  // node's piece, score and children from one place.
  struct Node {
    float score = 0;         // the piece's score, when `id` >= 0
    int32_t id = -1;         // the piece ending here, or -1
    int32_t first_child = 0;  // with more than kDenseChildren children: the index of their table in dense_
    uint16_t children = 0;
    unsigned char label = 0;  // the byte leading here from the parent
  };
  struct Best {  // the best path ending at a byte position
    float score;
    int32_t start, id;
  };
  int32_t child(const Node& n, unsigned char label) const;
  void propose(size_t end, double score, int32_t start, int32_t id);

  static constexpr int kDenseChildren = 16;  // nodes with more children find them in a table by label

  std::vector<Node> nodes_;  // nodes_[0] is the root
  std::vector<std::array<int32_t, 256>> dense_;  // children by label (-1: none) of the nodes with many
  int32_t root_[256];        // the root's children by label, -1 for none
  float unk_score_ = 0;
  std::vector<Best> best_;  // per call scratch
  std::vector<std::pair<int32_t, int32_t>> path_;
};

std::unique_ptr<UnigramEncoder> UnigramEncoder::make(const ModelInfo& m, std::string* reason) {
  std::unique_ptr<UnigramEncoder> e(new UnigramEncoder);
  if (!e->init(m, reason) || nan_score(m, reason)) return nullptr;
  // The trie: normal pieces (the library skips unused ones; user-defined pieces also change normalisation).
  std::vector<std::pair<std::string_view, int32_t>> keys;
  float min_score = FLT_MAX;
  for (size_t i = 0; i < m.pieces.size(); ++i) {
    if (m.types[i] == kUserDefined) {
      *reason = "user-defined pieces (kept whole by the normaliser) are handled by the library";
      return nullptr;
    }
    if ((m.types[i] == kNormal || m.types[i] == kUnused) && m.pieces[i].find('\0') != std::string::npos) {
      *reason = "a piece holds a NUL byte (the library's trie cuts it there)";
      return nullptr;
    }
    if (m.types[i] != kNormal) continue;
    min_score = std::min(min_score, m.scores[i]);
    keys.emplace_back(m.pieces[i], static_cast<int32_t>(i));
  }
  if (keys.empty()) {
    *reason = "the model has no normal pieces";
    return nullptr;
  }
  e->unk_score_ = min_score - 10.0f;  // the library's kUnkPenalty
  std::sort(keys.begin(), keys.end());
  // Built breadth first from the sorted keys: node n covers the keys [lo, hi) that share its first `depth` bytes.
  struct Range {
    size_t lo, hi, depth;
  };
  std::vector<Range> ranges = {{0, keys.size(), 0}};
  e->nodes_.emplace_back();
  for (size_t n = 0; n < e->nodes_.size(); ++n) {
    const Range r = ranges[n];
    size_t lo = r.lo;
    if (lo < r.hi && keys[lo].first.size() == r.depth) {  // the key that ends here sorts first
      e->nodes_[n].id = keys[lo].second;
      e->nodes_[n].score = m.scores[static_cast<size_t>(keys[lo++].second)];
    }
    e->nodes_[n].first_child = static_cast<int32_t>(e->nodes_.size());
    while (lo < r.hi) {
      const auto label = static_cast<unsigned char>(keys[lo].first[r.depth]);
      size_t hi = lo;
      while (hi < r.hi && static_cast<unsigned char>(keys[hi].first[r.depth]) == label) ++hi;
      e->nodes_.emplace_back();
      e->nodes_.back().label = label;
      ranges.push_back({lo, hi, r.depth + 1});
      ++e->nodes_[n].children;  // at most 256
      lo = hi;
    }
  }
  std::fill(std::begin(e->root_), std::end(e->root_), -1);
  for (int32_t c = e->nodes_[0].first_child; c < e->nodes_[0].first_child + e->nodes_[0].children; ++c)
    e->root_[e->nodes_[static_cast<size_t>(c)].label] = c;
  for (Node& node : e->nodes_) {
    if (node.children <= kDenseChildren) continue;
    auto& table = e->dense_.emplace_back();
    table.fill(-1);
    for (int32_t c = node.first_child; c < node.first_child + node.children; ++c)
      table[e->nodes_[static_cast<size_t>(c)].label] = c;
    node.first_child = static_cast<int32_t>(e->dense_.size() - 1);
  }
  return e;
}

int32_t UnigramEncoder::child(const Node& n, unsigned char label) const {
  if (n.children > kDenseChildren) return dense_[static_cast<size_t>(n.first_child)][label];
  const Node* first = nodes_.data() + n.first_child;
  for (const Node* c = first; c != first + n.children; ++c) {
    if (c->label == label) return static_cast<int32_t>(c - nodes_.data());
    if (c->label > label) break;
  }
  return -1;
}

void UnigramEncoder::propose(size_t end, double score, int32_t start, int32_t id) {
  Best& b = best_[end];
  if (b.start < 0 || score > b.score) b = {static_cast<float>(score), start, id};
}

void UnigramEncoder::encode_normalized(std::string_view s, std::vector<int>* ids) {
  const size_t n = s.size();
  if (n == 0) return;
  best_.assign(n + 1, Best{0.0f, -1, -1});
  for (size_t start = 0; start < n;) {
    const float here = best_[start].score;
    const size_t char_len = std::min(utf8_lead_size(static_cast<unsigned char>(s[start])), n - start);
    bool one_char_piece = false;
    int32_t node = root_[static_cast<unsigned char>(s[start])];
    for (size_t end = start + 1; node >= 0; ++end) {
      const Node& at = nodes_[static_cast<size_t>(node)];
      if (at.id >= 0) {
        propose(end, static_cast<double>(at.score) + here, static_cast<int32_t>(start), at.id);
        one_char_piece |= end - start == char_len;
      }
      if (end == n) break;
      node = child(at, static_cast<unsigned char>(s[end]));
    }
    if (!one_char_piece) propose(start + char_len, unk_score_ + here, static_cast<int32_t>(start), unk_id_);  // float
    start += char_len;
  }
  // The best path, back from the end, then its ids in order (unknown pieces as the library's ids make them).
  path_.clear();  // (start, end) of each piece, last first
  for (size_t end = n; end > 0; end = static_cast<size_t>(best_[end].start))
    path_.emplace_back(best_[end].start, static_cast<int32_t>(end));
  for (auto it = path_.rbegin(); it != path_.rend(); ++it) {
    const int32_t id = best_[static_cast<size_t>(it->second)].id;
    if (id == unk_id_)
      append_unknown(s.substr(static_cast<size_t>(it->first), static_cast<size_t>(it->second - it->first)), ids);
    else
      ids->push_back(id);
  }
}

}  // namespace

// librho's encoder for `m`, or nullptr with `reason` when the library must encode.
std::unique_ptr<SpEncoder> make_encoder(ModelInfo m, std::string* reason) {
  switch (m.model_type) {
    case kBpe: return BpeEncoder::make(std::move(m), reason);
    case kUnigram: return UnigramEncoder::make(m, reason);
    case kWord: *reason = "a word model (librho encodes BPE and unigram models)"; return nullptr;
    case kChar: *reason = "a char model (librho encodes BPE and unigram models)"; return nullptr;
    default: *reason = fmt::format("an unknown model type ({})", m.model_type); return nullptr;
  }
}

struct SpTokenizer::Impl {
  sentencepiece::SentencePieceProcessor sp;
  std::unique_ptr<SpEncoder> own;
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
    t.impl_->own = make_encoder(std::move(info), &t.impl_->library_reason);
  }
  return t;
}

SpTokenizer SpTokenizer::load(const std::string& path, Engine engine) {
  return parse(read_text_file(path), path, engine);
}

std::vector<int> SpTokenizer::encode(std::string_view text) {
  // The encoders index the normalised text with int: normalising makes a text at least as long (malformed bytes
  // triple, rule tables may do more), so longer texts are refused before and after it.
  constexpr size_t kMaxBytes = INT_MAX / 3;
  const auto too_long = [&] {
    return Error(fmt::format("{}: a text of {} bytes is more than SentencePiece encodes at once ({} bytes, {} once "
                             "normalised)", impl_->source, text.size(), kMaxBytes, SpEncoder::kMaxNormalized));
  };
  if (text.size() > kMaxBytes) throw too_long();
  std::vector<int> ids;
  if (impl_->own) {
    if (!impl_->own->encode(text, &ids)) throw too_long();
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
bool SpTokenizer::own_encoder() const { return impl_->own != nullptr; }
const std::string& SpTokenizer::library_reason() const { return impl_->library_reason; }

}  // namespace rho
