#include "librho/data/sp_model.h"

#include <cstring>

#include "librho/util/text.h"

namespace rho::sp {
namespace {

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

}  // namespace

// Field numbers are sentencepiece_model.proto's.
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
      if (f == 2 && ft == 2) return nw.bytes(&s) ? (m->charsmap = std::string(s), true) : false;
      if (f == 3 && ft == 0) return read_bool(nw, &m->add_dummy_prefix);
      if (f == 4 && ft == 0) return read_bool(nw, &m->remove_extra_whitespaces);
      if (f == 5 && ft == 0) return read_bool(nw, &m->escape_whitespaces);
      return nw.skip(ft);
    });
  });
}


// ---- CharsMap: darts-clone's double array, walked as its commonPrefixSearch walks it ----
// A unit is a uint32: bit 8 says a key ends at the node (its leaf is the unit at node ^ offset), a leaf holds
// its value in the low 31 bits with bit 31 set (so no byte label matches it), other units hold their label in
// the low 8 bits and their children's offset above bit 9. A malformed array is read with bounds checks.

namespace {

constexpr uint32_t kLeafBit = 1u << 31;
uint32_t unit_label(uint32_t u) { return u & (kLeafBit | 0xFF); }
bool unit_has_leaf(uint32_t u) { return (u >> 8) & 1; }
uint32_t unit_offset(uint32_t u) { return (u >> 10) << ((u & (1u << 9)) >> 6); }

}  // namespace

bool CharsMap::parse(std::string_view blob, std::string* reason) {
  uint32_t trie_bytes = 0;
  if (blob.size() > 4) std::memcpy(&trie_bytes, blob.data(), 4);  // little-endian, as written on every platform
  if (blob.size() <= 4 || trie_bytes == 0 || trie_bytes % 4 != 0 || trie_bytes > blob.size() - 4) {
    *reason = "its normalisation rule table is malformed";
    return false;
  }
  units_.resize(trie_bytes / 4);
  std::memcpy(units_.data(), blob.data() + 4, trie_bytes);
  replacements_ = std::string(blob.substr(4 + trie_bytes));
  for (const uint32_t u : units_) {  // every leaf's replacement lies in the table, NUL-terminated
    if (!(u & kLeafBit)) continue;
    const size_t at = u & ~kLeafBit;
    if (at >= replacements_.size() || replacements_.find('\0', at) == std::string::npos) {
      *reason = "its normalisation rule table points outside its replacements";
      return false;
    }
  }
  const uint32_t root = unit_offset(units_[0]);
  for (int b = 0; b < 256; ++b) {
    const size_t node = root ^ static_cast<uint32_t>(b);
    starts_[b] = node < units_.size() && unit_label(units_[node]) == static_cast<uint32_t>(b);
  }
  return true;
}

size_t CharsMap::longest_match(std::string_view s, std::string_view* replacement) const {
  size_t node = unit_offset(units_[0]), longest = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    const auto byte = static_cast<unsigned char>(s[i]);
    node ^= byte;
    if (node >= units_.size() || unit_label(units_[node]) != byte) break;
    const uint32_t u = units_[node];
    node ^= unit_offset(u);
    if (unit_has_leaf(u)) {
      if (node >= units_.size()) break;
      longest = i + 1;
      *replacement = replacements_.c_str() + (units_[node] & ~kLeafBit);
    }
  }
  return longest;
}

// ---- Normalizer ----

bool Normalizer::init(const ModelInfo& m, std::string* reason) {
  add_dummy_prefix_ = m.add_dummy_prefix;
  remove_extra_whitespaces_ = m.remove_extra_whitespaces;
  escape_ = m.escape_whitespaces;
  suffix_ = m.treat_whitespace_as_suffix;
  space_ = escape_ ? kSpaceSymbol : std::string_view(" ");
  return m.charsmap.empty() || rules_.parse(m.charsmap, reason);
}

// SentencePiece's NormalizePrefix: the replacement of the longest rule matching the start of `in`, or its first
// character (U+FFFD for a malformed byte, which consumes one byte); `consumed` is the input bytes used.
std::string_view Normalizer::prefix(std::string_view in, size_t* consumed) const {
  static constexpr std::string_view kReplacement = "\xef\xbf\xbd";
  const auto* s = reinterpret_cast<const unsigned char*>(in.data());
  if (!rules_.empty() && rules_.may_start(s[0])) {
    std::string_view replacement;
    if ((*consumed = rules_.longest_match(in, &replacement)) > 0) return replacement;
  }
  const size_t len = s[0] < 0x80 ? 1 : utf8_char_size(s, in.size());  // SentencePiece's DecodeUTF8 validity
  *consumed = len == 0 ? 1 : len;
  return len == 0 ? kReplacement : in.substr(0, len);
}

void Normalizer::normalize(std::string_view in, std::string* out) const {
  out->clear();
  size_t consumed = 0;
  if (remove_extra_whitespaces_)  // heading white space, after the rules (a rule may make a space)
    while (!in.empty() && prefix(in, &consumed) == " ") in.remove_prefix(consumed);
  if (in.empty()) return;
  if (!suffix_ && add_dummy_prefix_) out->append(space_);
  bool prev_space = remove_extra_whitespaces_;
  while (!in.empty()) {
    const auto c = static_cast<unsigned char>(in[0]);
    if (c < 0x80 && c != ' ' && (rules_.empty() || !rules_.may_start(c))) {  // the common case, kept short
      out->push_back(static_cast<char>(c));
      in.remove_prefix(1);
      prev_space = false;
      continue;
    }
    std::string_view piece = prefix(in, &consumed);
    in.remove_prefix(consumed);
    while (prev_space && !piece.empty() && piece[0] == ' ') piece.remove_prefix(1);
    if (!piece.empty()) {
      for (const char c : piece) {
        if (c == ' ' && escape_)
          out->append(kSpaceSymbol);
        else
          out->push_back(c);
      }
      prev_space = piece.back() == ' ';
    }
    if (!remove_extra_whitespaces_) prev_space = false;
  }
  if (remove_extra_whitespaces_)
    while (out->size() >= space_.size() && std::string_view(*out).substr(out->size() - space_.size()) == space_)
      out->resize(out->size() - space_.size());
  if (suffix_ && add_dummy_prefix_) out->append(space_);
}

}  // namespace rho::sp
