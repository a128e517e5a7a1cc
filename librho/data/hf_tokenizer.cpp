#include "librho/data/hf_tokenizer.h"

#include <fmt/format.h>
#include <utf8proc.h>

#include <algorithm>
#include <climits>
#include <filesystem>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "librho/util/error.h"
#include "librho/util/files.h"
#include "librho/util/regex.h"
#include "librho/util/text.h"

namespace rho {
namespace {
using json = nlohmann::json;

// GPT-2's pre-tokenizer pattern, used by the ByteLevel pre-tokenizer with use_regex.
constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

enum class SplitBehavior { Isolated, Removed, MergedWithPrevious, MergedWithNext };

// One pre-tokenizer step: cuts each piece further (and, for ByteLevel, maps its bytes to characters).
struct PreStep {
  enum Kind { Split, ByteLevel } kind = Split;
  std::shared_ptr<const Regex> regex;  // Split (a string pattern is escaped into a regex); ByteLevel with use_regex
  SplitBehavior behavior = SplitBehavior::Isolated;
  bool add_prefix_space = false;  // ByteLevel
};

// GPT-2's byte -> printable character map (as UTF-8) and its inverse.
struct ByteMap {
  std::string to_char[256];
  std::unordered_map<uint32_t, uint8_t> from_codepoint;
  ByteMap() {
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      const uint32_t cp = printable ? static_cast<uint32_t>(b) : static_cast<uint32_t>(256 + n++);
      uint8_t buf[4];
      const auto len = utf8proc_encode_char(static_cast<utf8proc_int32_t>(cp), buf);
      to_char[b].assign(reinterpret_cast<const char*>(buf), static_cast<size_t>(len));
      from_codepoint[cp] = static_cast<uint8_t>(b);
    }
  }
};
const ByteMap& byte_map() {
  static const ByteMap m;
  return m;
}

std::string escape_regex(const std::string& s) {
  std::string out;
  for (char ch : s) {
    if (std::string("\\^$.|?*+()[]{}").find(ch) != std::string::npos) out += '\\';
    out += ch;
  }
  return out;
}

}  // namespace

bool is_hf_tokenizer_file(const std::string& path) {
  return std::filesystem::path(path).extension() == ".json";
}

struct HfTokenizer::Impl {
  std::string source;
  bool nfc = false;
  std::vector<PreStep> steps;
  std::unordered_map<std::string, int> vocab;
  std::vector<std::string> id_to_piece;  // vocab and added tokens, by id
  std::vector<bool> id_is_added;
  std::unordered_map<std::string, int> merge_rank;  // "a b" -> rank
  bool ignore_merges = false;
  bool byte_fallback = false;
  int unk_id = -1;
  std::vector<std::pair<std::string, int>> added;  // content, id (longest first)
  bool added_first_byte[256] = {};                  // bytes an added token starts with: the only places to look
  int64_t bos = -1, eos = -1;
  mutable std::unordered_map<std::string, std::vector<int>> cache;

  // parse's steps, in order; each refuses by name what this reader does not implement.
  int64_t read_bpe_model(const json& model);  // returns the highest id
  void read_text_steps(const json& j);
  void read_added_tokens(const json& j, int64_t max_id);
  void read_special_tokens(const json& j, const std::string& config_text);

  int id_of(const std::string& piece) const {
    const auto it = vocab.find(piece);
    return it == vocab.end() ? -1 : it->second;
  }

  // BPE over one byte-mapped word.
  void bpe(const std::string& word, std::vector<int>& out) const {
    if (const auto it = cache.find(word); it != cache.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
    std::vector<int> ids;
    const int whole = ignore_merges ? id_of(word) : -1;
    if (whole >= 0) {
      ids.push_back(whole);
    } else {
      std::vector<std::string> sym;
      for (size_t i = 0; i < word.size();) {
        const size_t n = std::min(utf8_lead_size(static_cast<unsigned char>(word[i])), word.size() - i);
        sym.push_back(word.substr(i, n));
        i += n;
      }
      std::string key;
      for (;;) {
        int best = std::numeric_limits<int>::max();
        size_t at = 0;
        for (size_t i = 0; i + 1 < sym.size(); ++i) {
          key.assign(sym[i]).append(" ").append(sym[i + 1]);
          const auto it = merge_rank.find(key);
          if (it != merge_rank.end() && it->second < best) {
            best = it->second;
            at = i;
          }
        }
        if (best == std::numeric_limits<int>::max()) break;
        // Merge every occurrence of the best pair, left to right.
        const std::string a = sym[at], b = sym[at + 1];
        std::vector<std::string> next;
        for (size_t i = 0; i < sym.size();) {
          if (i + 1 < sym.size() && sym[i] == a && sym[i + 1] == b) {
            next.push_back(a + b);
            i += 2;
          } else {
            next.push_back(sym[i++]);
          }
        }
        sym.swap(next);
      }
      for (const auto& s : sym) {
        int id = id_of(s);
        if (id < 0 && byte_fallback) {  // every byte as its <0xXX> token, when all of them exist
          std::vector<int> bytes;
          for (unsigned char ch : s) bytes.push_back(id_of(fmt::format("<0x{:02X}>", ch)));
          if (std::all_of(bytes.begin(), bytes.end(), [](int b) { return b >= 0; })) {
            ids.insert(ids.end(), bytes.begin(), bytes.end());
            continue;
          }
        }
        if (id < 0) id = unk_id;
        if (id < 0) throw Error(fmt::format("{}: the piece '{}' is not in the vocabulary and there is no unk_token",
                                            source, s));
        ids.push_back(id);
      }
    }
    out.insert(out.end(), ids.begin(), ids.end());
    if (cache.size() < 1'000'000) cache.emplace(word, std::move(ids));
  }

  // Normalizer, pre-tokenizers and BPE over text that holds no added token.
  void encode_plain(std::string text, std::vector<int>& out) const {
    if (text.empty()) return;
    if (nfc) {
      auto* p = utf8proc_NFC(reinterpret_cast<const utf8proc_uint8_t*>(text.c_str()));
      if (!p) throw Error(fmt::format("{}: NFC normalisation failed (invalid UTF-8?)", source));
      text.assign(reinterpret_cast<const char*>(p));
      std::free(p);
    }
    std::vector<std::string> pieces{std::move(text)};
    for (const auto& step : steps) {
      std::vector<std::string> next;
      for (auto& piece : pieces) {
        if (step.kind == PreStep::ByteLevel) {
          if (step.add_prefix_space && (piece.empty() || piece[0] != ' ')) piece.insert(0, " ");
          std::vector<std::string> parts;
          if (step.regex) {
            for (const auto& [b, e] : step.regex->matches(piece)) parts.push_back(piece.substr(b, e - b));
          } else {
            parts.push_back(piece);
          }
          for (const auto& part : parts) {
            std::string mapped;
            for (unsigned char ch : part) mapped += byte_map().to_char[ch];
            next.push_back(std::move(mapped));
          }
          continue;
        }
        size_t last = 0;
        std::string pending;  // MergedWithNext: a match waiting for the text after it
        for (const auto& [b, e] : step.regex->matches(piece)) {
          std::string gap = piece.substr(last, b - last), match = piece.substr(b, e - b);
          switch (step.behavior) {
            case SplitBehavior::Isolated:
              if (!gap.empty()) next.push_back(gap);
              next.push_back(match);
              break;
            case SplitBehavior::Removed:
              if (!gap.empty()) next.push_back(gap);
              break;
            case SplitBehavior::MergedWithPrevious:
              next.push_back(gap + match);
              break;
            case SplitBehavior::MergedWithNext:
              if (!pending.empty() || !gap.empty()) next.push_back(pending + gap);
              pending = match;
              break;
          }
          last = e;
        }
        std::string tail = pending + piece.substr(last);
        if (!tail.empty()) next.push_back(std::move(tail));
      }
      pieces.swap(next);
    }
    for (const auto& w : pieces)
      if (!w.empty()) bpe(w, out);
  }
};

HfTokenizer::HfTokenizer() : impl_(std::make_unique<Impl>()) {}
HfTokenizer::~HfTokenizer() = default;
HfTokenizer::HfTokenizer(HfTokenizer&&) noexcept = default;
HfTokenizer& HfTokenizer::operator=(HfTokenizer&&) noexcept = default;

namespace {
[[noreturn]] void unsupported(const std::string& source, const std::string& what) {
  throw Error(fmt::format("{}: {} is not supported (librho reads byte-level BPE tokenizer.json files: the BPE model; "
                          "normalizer none or NFC; pre-tokenizers Split, Digits and ByteLevel)", source, what));
}

std::string token_text(const json& t) {  // "content" or a plain string (tokenizer_config.json's bos/eos)
  if (t.is_string()) return t.get<std::string>();
  if (t.is_object() && t.contains("content")) return t["content"].get<std::string>();
  return {};
}

void add_pre_step(const json& p, const std::string& source, std::vector<PreStep>& steps) {
  const auto type = p.value("type", std::string());
  PreStep s;
  if (type == "Sequence") {
    for (const auto& q : p.at("pretokenizers")) add_pre_step(q, source, steps);
    return;
  }
  if (type == "ByteLevel") {
    s.kind = PreStep::ByteLevel;
    s.add_prefix_space = p.value("add_prefix_space", false);
    if (p.value("use_regex", true)) s.regex = std::make_shared<Regex>(kGpt2Pattern, source + ": ByteLevel");
  } else if (type == "Split") {
    const auto& pat = p.at("pattern");
    const std::string re = pat.contains("Regex") ? pat["Regex"].get<std::string>()
                                                 : escape_regex(pat.at("String").get<std::string>());
    s.regex = std::make_shared<Regex>(re, source + ": pre_tokenizer Split");
    const auto b = p.value("behavior", std::string("Isolated"));
    if (b == "Isolated") s.behavior = SplitBehavior::Isolated;
    else if (b == "Removed") s.behavior = SplitBehavior::Removed;
    else if (b == "MergedWithPrevious") s.behavior = SplitBehavior::MergedWithPrevious;
    else if (b == "MergedWithNext") s.behavior = SplitBehavior::MergedWithNext;
    else unsupported(source, "Split behavior '" + b + "'");
    if (p.value("invert", false)) unsupported(source, "Split with invert");
  } else if (type == "Digits") {
    s.regex = std::make_shared<Regex>(p.value("individual_digits", false) ? R"(\p{N})" : R"(\p{N}+)",
                                      source + ": Digits");
  } else {
    unsupported(source, "pre_tokenizer '" + type + "'");
  }
  steps.push_back(std::move(s));
}
}  // namespace

// model: a byte-level BPE vocabulary and merges. Returns the highest id.
int64_t HfTokenizer::Impl::read_bpe_model(const json& model) {
  if (model.value("type", std::string("BPE")) != "BPE")
    unsupported(source, "model type '" + model.value("type", std::string()) + "'");
  byte_fallback = model.value("byte_fallback", false);  // pieces missing from the vocabulary as <0xXX> bytes
  for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix", "dropout"})
    if (model.contains(k) && !model[k].is_null()) unsupported(source, std::string("model.") + k);
  ignore_merges = model.value("ignore_merges", false);
  int64_t max_id = -1;
  for (auto& [piece, id] : model.at("vocab").items()) {
    vocab[piece] = id.get<int>();
    max_id = std::max<int64_t>(max_id, id.get<int>());
  }
  int rank = 0;
  for (const auto& mg : model.at("merges")) {
    const std::string key = mg.is_string() ? mg.get<std::string>()
                                           : mg.at(0).get<std::string>() + " " + mg.at(1).get<std::string>();
    merge_rank.emplace(key, rank++);
  }
  if (model.contains("unk_token") && model["unk_token"].is_string()) unk_id = id_of(model["unk_token"]);
  return max_id;
}

// normalizer: none, NFC, or a Sequence of NFC; pre_tokenizer: exactly one ByteLevel step among the others.
void HfTokenizer::Impl::read_text_steps(const json& j) {
  if (j.contains("normalizer") && !j["normalizer"].is_null()) {
    const auto& n = j["normalizer"];
    auto one = [&](const json& x) {
      const auto type = x.value("type", std::string());
      if (type == "NFC") nfc = true;
      else unsupported(source, "normalizer '" + type + "'");
    };
    if (n.value("type", std::string()) == "Sequence") {
      for (const auto& x : n.at("normalizers")) one(x);
    } else {
      one(n);
    }
  }
  if (!j.contains("pre_tokenizer") || j["pre_tokenizer"].is_null()) unsupported(source, "a missing pre_tokenizer");
  add_pre_step(j["pre_tokenizer"], source, steps);
  if (std::count_if(steps.begin(), steps.end(), [](const PreStep& s) { return s.kind == PreStep::ByteLevel; }) != 1)
    unsupported(source, "a pre-tokenizer without exactly one ByteLevel step");
}

// added_tokens (longest first, as they are matched), then the id -> piece table over them and the vocabulary.
void HfTokenizer::Impl::read_added_tokens(const json& j, int64_t max_id) {
  for (const auto& a : j.value("added_tokens", json::array())) {
    for (const char* k : {"lstrip", "rstrip", "single_word"})
      if (a.value(k, false))
        unsupported(source, fmt::format("added token '{}' with {}", a.value("content", std::string()), k));
    const int id = a.at("id").get<int>();
    added.emplace_back(a.at("content").get<std::string>(), id);
    if (!added.back().first.empty()) added_first_byte[static_cast<unsigned char>(added.back().first[0])] = true;
    max_id = std::max<int64_t>(max_id, id);
  }
  std::stable_sort(added.begin(), added.end(),
                   [](const auto& x, const auto& y) { return x.first.size() > y.first.size(); });
  id_to_piece.assign(static_cast<size_t>(max_id + 1), std::string());
  id_is_added.assign(static_cast<size_t>(max_id + 1), false);
  for (const auto& [piece, id] : vocab) id_to_piece[static_cast<size_t>(id)] = piece;
  for (const auto& [content, id] : added) {
    id_to_piece[static_cast<size_t>(id)] = content;
    id_is_added[static_cast<size_t>(id)] = true;
  }
}

// BOS: what the post-processor puts first (what transformers adds with add_special_tokens); EOS: the
// tokenizer_config.json's eos_token, else the usual end-of-text tokens.
void HfTokenizer::Impl::read_special_tokens(const json& j, const std::string& config_text) {
  auto special_id = [&](const std::string& content) -> int64_t {
    for (const auto& [c, id] : added)
      if (c == content) return id;
    return id_of(content);
  };
  if (j.contains("post_processor") && j["post_processor"].is_object()) {
    const auto& pp = j["post_processor"];
    for (const auto& proc : pp.value("type", std::string()) == "Sequence" ? pp.value("processors", json::array())
                                                                          : json::array({pp})) {
      const auto single = proc.value("single", json::array());
      if (proc.value("type", std::string()) == "TemplateProcessing" && !single.empty() &&
          single[0].contains("SpecialToken"))
        bos = special_id(single[0]["SpecialToken"].value("id", std::string()));
    }
  }
  if (!config_text.empty()) {
    const auto c = json::parse(config_text);
    if (c.contains("eos_token") && !c["eos_token"].is_null()) eos = special_id(token_text(c["eos_token"]));
  }
  if (eos < 0)
    for (const char* e : {"<|endoftext|>", "<|end_of_text|>", "</s>"})
      if ((eos = special_id(e)) >= 0) break;
}

HfTokenizer HfTokenizer::parse(const std::string& json_text, const std::string& config_text,
                               const std::string& source) {
  json j;
  try {
    j = json::parse(json_text);
  } catch (const json::exception& e) {
    throw Error(fmt::format("{}: invalid JSON ({})", source, e.what()));
  }
  HfTokenizer t;
  auto& m = *t.impl_;
  m.source = source;
  try {
    const int64_t max_id = m.read_bpe_model(j.at("model"));
    m.read_text_steps(j);
    m.read_added_tokens(j, max_id);
    m.read_special_tokens(j, config_text);
  } catch (const json::exception& e) {
    throw Error(fmt::format("{}: not a tokenizer.json this librho reads ({})", source, e.what()));
  }
  return t;
}

HfTokenizer HfTokenizer::load(const std::string& path) {
  const auto config = std::filesystem::path(path).parent_path() / "tokenizer_config.json";
  return parse(read_text_file(path), std::filesystem::exists(config) ? read_text_file(config.string()) : "", path);
}

std::vector<int> HfTokenizer::encode(const std::string& text) const {
  const auto& m = *impl_;
  std::vector<int> out;
  size_t start = 0, pos = 0;
  while (pos < text.size()) {
    bool hit = false;
    if (!m.added_first_byte[static_cast<unsigned char>(text[pos])]) {
      ++pos;
      continue;
    }
    for (const auto& [content, id] : m.added) {  // longest first: the leftmost-longest added token
      if (!content.empty() && text.compare(pos, content.size(), content) == 0) {
        m.encode_plain(text.substr(start, pos - start), out);
        out.push_back(id);
        pos += content.size();
        start = pos;
        hit = true;
        break;
      }
    }
    if (!hit) ++pos;
  }
  m.encode_plain(text.substr(start), out);
  return out;
}

std::string HfTokenizer::piece(int id) const {
  const auto& m = *impl_;
  if (id < 0 || static_cast<size_t>(id) >= m.id_to_piece.size()) return {};
  const auto& p = m.id_to_piece[static_cast<size_t>(id)];
  if (m.id_is_added[static_cast<size_t>(id)]) return p;
  std::string bytes;
  for (size_t i = 0; i < p.size();) {
    utf8proc_int32_t cp = 0;
    const auto n = utf8proc_iterate(reinterpret_cast<const utf8proc_uint8_t*>(p.data() + i),
                                    static_cast<utf8proc_ssize_t>(p.size() - i), &cp);
    if (n <= 0) break;
    const auto it = byte_map().from_codepoint.find(static_cast<uint32_t>(cp));
    if (it != byte_map().from_codepoint.end()) bytes += static_cast<char>(it->second);
    else bytes.append(p, i, static_cast<size_t>(n));
    i += static_cast<size_t>(n);
  }
  return bytes;
}

std::string HfTokenizer::decode(const std::vector<int>& ids) const {
  std::string out;
  for (int id : ids) out += piece(id);
  return out;
}

int64_t HfTokenizer::vocab_size() const { return static_cast<int64_t>(impl_->id_to_piece.size()); }
int64_t HfTokenizer::bos_id() const { return impl_->bos; }
int64_t HfTokenizer::eos_id() const { return impl_->eos; }

}  // namespace rho
