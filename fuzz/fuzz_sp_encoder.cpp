// libFuzzer target: librho's SentencePiece encoders against the SentencePiece library (a differential test).
// Input: one byte choosing the model, then the text. The models are trained once, at the first input, on a fixed
// generated corpus: BPE with identity rules and byte fallback, BPE with nmt_nfkc rules and runs of unknowns, unigram
// with nmt_nfkc rules and byte fallback (what rho_tokenize --train-tokenizer makes) and unigram with identity rules
// and runs of unknowns. Invariant:
// SpTokenizer's own encoder returns exactly the library's ids, for any bytes.
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "fuzz/fuzz_util.h"
#include "librho/data/sp_tokenizer.h"
#include "tests/unit/sp_train.h"

namespace {

std::vector<std::string> training_lines() {
  static const std::vector<std::string> words = {"the", "then", "answer", "is", "42", "3.14", "café", "日本語",
                                                 "😀", "▁", "\t", "ﬁ", "Ａ", "aaaa", "x+y", "====", "ababa"};
  std::mt19937 rng(5);
  std::vector<std::string> lines;
  for (int i = 0; i < 2000; ++i) {
    std::string s;
    for (int w = static_cast<int>(rng() % 10); w >= 0; --w) s += std::string(rng() % 3, ' ') + words[rng() % words.size()];
    lines.push_back(s);
  }
  return lines;
}

struct Pair {
  rho::SpTokenizer own, library;
};

std::vector<Pair>& models() {
  static std::vector<Pair> pairs = [] {
    const auto lines = training_lines();
    const std::vector<std::unordered_map<std::string, std::string>> settings = {
        {{"model_type", "bpe"}, {"normalization_rule_name", "identity"}, {"byte_fallback", "true"}},
        {{"model_type", "bpe"}, {"normalization_rule_name", "nmt_nfkc"}, {"character_coverage", "0.98"}},
        {{"model_type", "unigram"}, {"normalization_rule_name", "nmt_nfkc"}, {"byte_fallback", "true"}},
        {{"model_type", "unigram"}, {"normalization_rule_name", "identity"}, {"character_coverage", "0.98"}},
    };
    std::vector<Pair> out;
    for (auto args : settings) {
      args.emplace("vocab_size", "300");
      args.emplace("hard_vocab_limit", "false");
      std::string error;
      const auto model = rho_test::train_sentencepiece(lines, args, &error);
      rho_fuzz::check(error.empty(), "training a model failed: " + error);
      out.push_back({rho::SpTokenizer::parse(model, "fuzz.model"),
                     rho::SpTokenizer::parse(model, "fuzz.model", rho::SpTokenizer::Engine::Library)});
      rho_fuzz::check(out.back().own.own_encoder(), "librho's encoder refused a model: " + out.back().own.library_reason());
    }
    return out;
  }();
  return pairs;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  auto& pair = models()[data[0] % models().size()];
  const std::string text(reinterpret_cast<const char*>(data) + 1, size - 1);
  rho_fuzz::check(pair.own.encode(text) == pair.library.encode(text),
                  "librho's encoder and the library disagree (model " + std::to_string(data[0] % models().size()) + ")");
  return 0;
}
