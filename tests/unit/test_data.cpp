#include <ATen/ATen.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <random>
#include <set>
#include <unordered_map>

#include "helpers.h"
#include "librho/data/corpus.h"
#include "librho/data/hf_tokenizer.h"
#include "librho/data/sp_tokenizer.h"
#include "librho/data/token_dataset.h"
#include "librho/util/error.h"
#include "librho/util/files.h"
#include "librho/util/host_memory.h"
#include "librho/util/sha256.h"
#include "sp_train.h"

using Catch::Matchers::Contains;

namespace {

constexpr int64_t kMod = 50021;  // token at global position p is p % kMod: positions can be read off the tokens

// Writes a dataset whose shards hold the given token counts, as the tokenizer would (raw little-endian + manifest).
std::shared_ptr<rho::TokenDataset> make_dataset(const std::string& dir, const std::vector<int64_t>& sizes,
                                                const std::string& dtype = "uint16") {
  rho::TokenManifest m;
  m.dtype = dtype;
  m.vocab_size = dtype == "uint16" ? 65536 : 100000;
  m.tokenizer_name = "test.model";
  m.tokenizer_sha256 = rho::sha256_hex(std::string("test"));
  m.bos_id = 1;
  m.eos_id = 2;
  int64_t pos = 0;
  for (size_t s = 0; s < sizes.size(); ++s) {
    std::string bytes;
    for (int64_t i = 0; i < sizes[s]; ++i, ++pos) {
      const uint32_t v = static_cast<uint32_t>(pos % kMod);
      bytes.append(reinterpret_cast<const char*>(&v), dtype == "uint16" ? 2 : 4);
    }
    const auto name = fmt::format("shard_{:05d}.bin", s);
    rho::write_file_atomic(dir + "/" + name, bytes);
    m.shards.push_back({name, sizes[s], sizes[s] / 10, rho::sha256_hex(bytes)});
  }
  rho::write_file_atomic(dir + "/manifest.json", m.to_json());
  return std::make_shared<rho::TokenDataset>(rho::TokenDataset::open(dir));
}

std::vector<int64_t> window_starts(const rho::Batch& b) {
  std::vector<int64_t> w;
  for (int64_t r = 0; r < b.positions.size(0); ++r) w.push_back(b.positions[r][0].item<int64_t>());
  return w;
}

}  // namespace

TEST_CASE("token dataset: slices cross shard boundaries, in both dtypes", "[data]") {
  for (const std::string dtype : {"uint16", "uint32"}) {
    rho::test::TempDir dir;
    auto d = make_dataset(dir.str(), {1000, 7, 2500}, dtype);
    CHECK(d->num_tokens() == 3507);
    CHECK(d->manifest().num_documents() == 100 + 0 + 250);
    CHECK(d->hash() == rho::sha256_hex(rho::read_text_file(dir.str("manifest.json"))));
    CHECK(at::equal(d->slice(990, 30), at::arange(990, 1020)));
    CHECK(at::equal(d->slice(0, 3507), at::arange(0, 3507)));
    CHECK(at::equal(d->shard_tokens(1), at::arange(1000, 1007)));
    CHECK(d->shard_start(2) == 1007);
    CHECK_THROWS_WITH(d->slice(3500, 8), Contains("outside the dataset's 3507 tokens"));
    CHECK_NOTHROW(rho::TokenDataset::open(dir.str(), true));
    // The manifest survives a round trip unchanged.
    const auto text = rho::read_text_file(dir.str("manifest.json"));
    CHECK(rho::TokenManifest::from_json(text, "m").to_json() == text);
  }
}

TEST_CASE("loader: every window exactly once per epoch, a new order each epoch", "[data]") {
  rho::test::TempDir dir;
  auto d = make_dataset(dir.str(), {1000, 7, 2500});
  rho::LoaderOptions o;
  o.seq_len = 16;
  o.batch_size = 5;
  o.seed = 7;
  o.prefetch = 0;
  rho::BatchLoader loader(d, o);
  const int64_t w = loader.windows_per_epoch();
  REQUIRE(w == (3507 - 1) / 16);
  std::vector<int64_t> stream;
  while (static_cast<int64_t>(stream.size()) < 2 * w) {
    auto b = loader.next();
    CHECK(b.tokens.sizes() == at::IntArrayRef({5, 17}));
    for (auto s : window_starts(b)) stream.push_back(s);
  }
  for (int epoch = 0; epoch < 2; ++epoch) {
    std::vector<int64_t> e(stream.begin() + epoch * w, stream.begin() + (epoch + 1) * w);
    std::sort(e.begin(), e.end());
    for (int64_t i = 0; i < w; ++i) REQUIRE(e[static_cast<size_t>(i)] == i * 16);
  }
  CHECK(!std::equal(stream.begin(), stream.begin() + w, stream.begin() + w));
  // The order is a function of the seed alone.
  rho::BatchLoader same(d, o);
  CHECK(window_starts(same.next()) == std::vector<int64_t>(stream.begin(), stream.begin() + 5));
  o.seed = 8;
  rho::BatchLoader other(d, o);
  CHECK(window_starts(other.next()) != std::vector<int64_t>(stream.begin(), stream.begin() + 5));
}

TEST_CASE("loader: ranks split the stream into disjoint batches", "[data]") {
  rho::test::TempDir dir;
  auto d = make_dataset(dir.str(), {3000, 1001});
  for (int64_t world : {2, 3}) {
    rho::LoaderOptions o;
    o.seq_len = 8;
    o.batch_size = 4;
    o.seed = 3;
    rho::LoaderOptions single = o;
    single.prefetch = 0;
    rho::BatchLoader reference(d, single);  // world 1: the stream itself
    std::vector<int64_t> stream;
    const int64_t steps = reference.windows_per_epoch() / (o.batch_size * world);
    while (static_cast<int64_t>(stream.size()) < steps * world * o.batch_size)
      for (auto s : window_starts(reference.next())) stream.push_back(s);
    std::set<int64_t> seen;
    for (int64_t rank = 0; rank < world; ++rank) {
      o.rank = rank;
      o.world_size = world;
      rho::BatchLoader loader(d, o);
      for (int64_t step = 0; step < steps; ++step) {
        const auto got = window_starts(loader.next());
        const auto first = stream.begin() + (step * world + rank) * o.batch_size;
        CHECK(got == std::vector<int64_t>(first, first + o.batch_size));
        for (auto s : got) CHECK(seen.insert(s).second);
      }
    }
    CHECK(static_cast<int64_t>(seen.size()) == steps * world * o.batch_size);
  }
}

TEST_CASE("loader: seek(k) then next() gives a fresh loader's k-th batch", "[data]") {
  rho::test::TempDir dir;
  auto d = make_dataset(dir.str(), {700, 700});
  for (int prefetch : {0, 3}) {
    rho::LoaderOptions o;
    o.seq_len = 32;
    o.batch_size = 3;
    o.seed = 11;
    o.prefetch = prefetch;
    rho::BatchLoader fresh(d, o);
    std::vector<rho::Batch> batches;
    for (int i = 0; i < 40; ++i) batches.push_back(fresh.next());  // several epochs (43 windows each)
    for (int64_t k : {0, 1, 13, 14, 39}) {
      rho::BatchLoader resumed(d, o);
      resumed.seek(k);
      auto b = resumed.next();
      CHECK(b.step == k);
      CHECK(resumed.step() == k + 1);
      CHECK(at::equal(b.tokens, batches[static_cast<size_t>(k)].tokens));
      CHECK(at::equal(b.positions, batches[static_cast<size_t>(k)].positions));
      CHECK(at::equal(resumed.make_batch(k).tokens, b.tokens));
    }
    // Seeking a loader that is already prefetching, backwards and forwards.
    rho::BatchLoader used(d, o);
    for (int i = 0; i < 5; ++i) used.next();
    used.seek(2);
    CHECK(at::equal(used.next().tokens, batches[2].tokens));
    used.seek(30);
    CHECK(at::equal(used.next().tokens, batches[30].tokens));
    CHECK(at::equal(used.next().tokens, batches[31].tokens));
  }
}

TEST_CASE("loader: positions index a side array aligned with the tokens", "[data]") {
  rho::test::TempDir dir;
  auto d = make_dataset(dir.str(), {100, 250, 13, 400});
  std::vector<at::Tensor> parts;
  for (size_t s = 0; s < d->manifest().shards.size(); ++s) parts.push_back(d->shard_tokens(s));
  const at::Tensor side = at::cat(parts);  // e.g. per-token reference losses, stored in dataset order
  rho::LoaderOptions o;
  o.seq_len = 20;
  o.batch_size = 6;
  o.pin_memory = true;
  rho::BatchLoader loader(d, o);
  for (int i = 0; i < 10; ++i) {
    auto b = loader.next();
    if (at::hasCUDA()) CHECK(b.tokens.is_pinned());  // pinning is asked for only where CUDA can use it
    CHECK(at::equal(at::take(side, b.positions), b.tokens));
    CHECK(at::equal(at::take(side, b.target_positions()), b.targets()));
    CHECK(at::equal(b.inputs(), b.tokens.narrow(1, 0, 20)));
    for (int64_t r = 0; r < 6; ++r)
      CHECK(at::equal(d->slice(b.positions[r][0].item<int64_t>(), 21), b.tokens[r]));
  }
}

TEST_CASE("loader: bad options and too-small datasets are refused", "[data]") {
  rho::test::TempDir dir;
  auto d = make_dataset(dir.str(), {10});
  rho::LoaderOptions o;
  o.seq_len = 10;
  CHECK_THROWS_WITH(rho::BatchLoader(d, o), Contains("too few for one window"));
  o.seq_len = 4;
  o.rank = 2;
  o.world_size = 2;
  CHECK_THROWS_WITH(rho::BatchLoader(d, o), Contains("rank 2 is not in a world of 2"));
}

TEST_CASE("token dataset: manifest errors name the file and the field", "[data]") {
  rho::test::TempDir dir;
  make_dataset(dir.str(), {100, 50});
  const auto path = dir.str("manifest.json");
  const auto good = nlohmann::json::parse(rho::read_text_file(path));
  auto expect = [&](const std::function<void(nlohmann::json&)>& edit, const std::string& field,
                    const std::string& what) {
    auto j = good;
    edit(j);
    rho::write_file_atomic(path, j.dump());
    CHECK_THROWS_WITH(rho::TokenDataset::open(dir.str()),
                      Contains(path) && Contains("'" + field + "'") && Contains(what));
  };
  expect([](auto& j) { j.erase("eos_id"); }, "eos_id", "missing");
  expect([](auto& j) { j["dtype"] = "int8"; }, "dtype", "not uint16 or uint32");
  expect([](auto& j) { j["format_version"] = 2; }, "format_version", "not supported");
  expect([](auto& j) { j["vocab_size"] = "big"; }, "vocab_size", "expected an integer");
  expect([](auto& j) { j["bos_id"] = 70000; }, "bos_id", "outside");
  expect([](auto& j) { j["shards"][1]["sha256"] = "abc"; }, "shards[1].sha256", "not a lowercase hex sha256");
  expect([](auto& j) { j["shards"][0].erase("num_tokens"); }, "shards[0].num_tokens", "missing");
  expect([](auto& j) { j["shards"][1]["file"] = "../x.bin"; }, "shards[1].file", "not a path inside");
  expect([](auto& j) { j["num_tokens"] = 151; }, "num_tokens", "differs from the shards' total 150");
  expect([](auto& j) { j["extra"] = 1; }, "extra", "unknown field");
  rho::write_file_atomic(path, std::string("{\"dtype\": "));
  CHECK_THROWS_WITH(rho::TokenDataset::open(dir.str()), Contains(path) && Contains("invalid JSON"));
  std::filesystem::remove(path);
  CHECK_THROWS_WITH(rho::TokenDataset::open(dir.str()), Contains("no manifest.json"));
}

TEST_CASE("token dataset: a truncated or corrupt shard is rejected by name", "[data]") {
  rho::test::TempDir dir;
  make_dataset(dir.str(), {100, 50, 80});
  const auto shard = dir.str("shard_00001.bin");
  auto bytes = rho::read_text_file(shard);
  rho::write_file_atomic(shard, bytes.substr(0, bytes.size() - 2));
  CHECK_THROWS_WITH(rho::TokenDataset::open(dir.str()), Contains(shard) && Contains("truncated"));
  bytes[10] ^= 1;
  rho::write_file_atomic(shard, bytes);
  CHECK_NOTHROW(rho::TokenDataset::open(dir.str()));  // sizes agree; only hashing sees the damage
  CHECK_THROWS_WITH(rho::TokenDataset::open(dir.str(), true), Contains(shard) && Contains("corrupt shard"));
}

TEST_CASE("corpus: UTF-8 validation", "[data]") {
  using rho::find_invalid_utf8;
  constexpr auto ok = std::string_view::npos;
  CHECK(find_invalid_utf8("plain ASCII text that is long enough for the fast path") == ok);
  CHECK(find_invalid_utf8("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80") == ok);  // 2, 3 and 4 byte forms
  CHECK(find_invalid_utf8("abcdefghij\xff") == 10);
  CHECK(find_invalid_utf8("a\xc0\xafz") == 1);              // overlong '/'
  CHECK(find_invalid_utf8("a\xe0\x80\xafz") == 1);          // overlong, 3 bytes
  CHECK(find_invalid_utf8("ab\xed\xa0\x80") == 2);          // UTF-16 surrogate
  CHECK(find_invalid_utf8("\xf4\x90\x80\x80") == 0);        // past U+10FFFF
  CHECK(find_invalid_utf8("abc\xe2\x82") == 3);             // cut short
  CHECK(find_invalid_utf8("abc\xe2(\xa1") == 3);            // bad continuation
}

TEST_CASE("corpus: records carry positions a reader can resume from", "[data]") {
  rho::test::TempDir dir;
  rho::write_file_atomic(dir.str("a.jsonl"), std::string("{\"text\": \"one\"}\n\n  \n{\"text\": \"two\"}\n{\"x\": 1}"));
  rho::write_file_atomic(dir.str("b.txt"), std::string("   \n"));
  rho::write_file_atomic(dir.str("c.txt"), std::string("first line\r\nsecond\n"));
  const auto files = rho::expand_inputs({dir.str()});
  REQUIRE(files == std::vector<std::string>{dir.str("a.jsonl"), dir.str("b.txt"), dir.str("c.txt")});
  auto read_all = [&](rho::CorpusOptions opt, rho::CorpusPosition from) {
    rho::CorpusReader reader(files, opt, from);
    std::vector<rho::Record> out;
    for (rho::Record r; reader.next(r);) out.push_back(r);
    return out;
  };
  rho::CorpusOptions lines;
  lines.text_unit = rho::TextUnit::Line;
  const auto all = read_all(lines, {});
  REQUIRE(all.size() == 6);
  CHECK(all[1].raw == "{\"text\": \"two\"}");
  CHECK(all[1].pos.line == 4);
  CHECK(all[2].pos.line == 5);
  CHECK(all[3].empty_file);  // b.txt holds only blanks
  CHECK(all[3].pos.file == 1);
  CHECK(all[4].raw == "first line");
  CHECK(all[5].raw == "second");
  for (size_t i = 0; i < all.size(); ++i) {
    const auto rest = read_all(lines, all[i].pos);
    REQUIRE(rest.size() == all.size() - i);
    for (size_t k = 0; k < rest.size(); ++k) CHECK(rest[k].raw == all[i + k].raw);
    CHECK(read_all(lines, all[i].end).size() == all.size() - i - 1);
  }
  rho::CorpusOptions whole;
  const auto files_mode = read_all(whole, {});
  REQUIRE(files_mode.size() == 5);  // 3 JSON lines, b.txt empty, c.txt as one document
  CHECK(files_mode[4].raw == "first line\r\nsecond\n");

  std::string text, error;
  int64_t line = 0;
  auto r = all[2];
  CHECK_FALSE(rho::record_text(r, true, {"text"}, text, error, line));
  CHECK(error == "missing field 'text'");
  rho::Record bad{{}, {}, "{\"text\": \"ok\",}"};
  CHECK_FALSE(rho::record_text(bad, true, {"text"}, text, error, line));
  CHECK_THAT(error, Contains("malformed JSON"));
  rho::Record two{{}, {}, "{\"q\": \"a\", \"a\": \"b\"}"};
  REQUIRE(rho::record_text(two, true, {"q", "a"}, text, error, line));
  CHECK(text == "a\nb");
  rho::Record utf{{}, {}, "line one\nline \xff two"};
  CHECK_FALSE(rho::record_text(utf, false, {}, text, error, line));
  CHECK(line == 1);
  CHECK_THAT(error, Contains("invalid UTF-8") && Contains("column 6"));
  CHECK_THROWS_WITH(rho::expand_inputs({dir.str("*.none")}), Contains("matches no file"));
  CHECK_THROWS_WITH(rho::expand_inputs({dir.str("missing.txt")}), Contains("no such file"));
}

TEST_CASE("HfTokenizer: byte-level BPE by merge rank, added tokens first, decode inverts, unsupported parts named",
          "[data][tokenizer]") {
  // Byte-level characters: 'a' 'b' as themselves, space as U+0120 (Ġ).
  const std::string json = R"({
    "normalizer": null,
    "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
    "post_processor": {"type": "ByteLevel"},
    "added_tokens": [{"id": 7, "content": "<|endoftext|>", "single_word": false, "lstrip": false, "rstrip": false,
                      "normalized": false, "special": true}],
    "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
              "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
              "vocab": {"a": 0, "b": 1, "\u0120": 2, "ab": 3, "\u0120a": 4, "\u0120ab": 5, "c": 6},
              "merges": ["\u0120 a", "a b", "\u0120a b"]}})";  // by rank: " a" first
  const auto t = rho::HfTokenizer::parse(json, "", "tok.json");
  CHECK(t.encode("ab ab") == std::vector<int>{3, 5});
  CHECK(t.encode("abc<|endoftext|> ab") == std::vector<int>{3, 6, 7, 5});
  CHECK(t.decode(t.encode("ab ab<|endoftext|>c")) == "ab ab<|endoftext|>c");
  CHECK(t.eos_id() == 7);
  CHECK(t.bos_id() == -1);
  CHECK(t.vocab_size() == 8);
  CHECK(rho::HfTokenizer::parse(json, R"({"eos_token": {"content": "c"}})", "tok.json").eos_id() == 6);
  auto with = [&](const std::string& from, const std::string& to) {
    auto j = json;
    const auto at = j.find(from);
    REQUIRE(at != std::string::npos);
    return j.replace(at, from.size(), to);
  };
  using Catch::Matchers::Contains;
  CHECK_THROWS_WITH(rho::HfTokenizer::parse(with(R"("type": "BPE")", R"("type": "WordPiece")"), "", "tok.json"),
                    Contains("tok.json") && Contains("model type 'WordPiece'"));
  CHECK(rho::HfTokenizer::parse(with(R"("byte_fallback": false)", R"("byte_fallback": true)"), "", "tok.json")
            .encode("ab ab") == std::vector<int>{3, 5});  // byte fallback: nothing missing, nothing changes
  CHECK_THROWS_WITH(rho::HfTokenizer::parse(with(R"("normalizer": null)", R"("normalizer": {"type": "Lowercase"})"), "",
                                            "tok.json"),
                    Contains("normalizer 'Lowercase'"));
  CHECK_THROWS_WITH(rho::HfTokenizer::parse(with(R"("type": "ByteLevel", "add_prefix_space")",
                                                 R"("type": "Metaspace", "add_prefix_space")"), "", "tok.json"),
                    Contains("pre_tokenizer 'Metaspace'"));
  CHECK_THROWS_WITH(rho::HfTokenizer::parse(with(R"("lstrip": false)", R"("lstrip": true)"), "", "tok.json"),
                    Contains("added token '<|endoftext|>' with lstrip"));
  CHECK_THROWS_WITH(rho::HfTokenizer::parse("{not json", "", "tok.json"), Contains("tok.json: invalid JSON"));
}

// ---- SentencePiece: librho's BPE and unigram encoders against the library, id for id ----

namespace {

// Text with what a BPE encoder can get wrong: words that share prefixes, digits, runs of spaces at both ends,
// tabs and newlines, runs of one letter (equal scores: the leftmost pair merges first), accents, CJK, emoji, the escaped-space character itself, and characters too rare to be in a
// small vocabulary.
std::string random_text(std::mt19937& rng, bool hostile) {
  static const std::vector<std::string> words = {
      "the", "then", "there", "therefore", "a", "an", "and", "answer", "is", "isn't", "42", "3.14", "1,000", "x+y=z",
      "(a)", "café", "naïve", "Ünïcödé", "日本語", "の", "中文字", "😀", "👩‍💻", "🇩🇪", "▁", "▁▁x", "\t", "\n", "—",
      "ℵ", "\u00a0", "ǅ", "ﬁ", "Ω", "𝔘", "\xef\xbf\xbd", "aaa", "aaaaa", "ooooo", "....", "1111", "=====", "ababa"};
  static const std::vector<std::string> bad = {"\xff", "\xe2\x96", "\xed\xa0\x80", "\xc0\x80", "\xf4\x90\x80\x80",
                                                std::string(1, '\0'), "\x80"};
  std::string s;
  const int n = static_cast<int>(rng() % 12);
  for (int i = 0; i < n; ++i) {
    const int spaces = static_cast<int>(rng() % 6 == 0 ? rng() % 4 : 1);
    s += std::string(static_cast<size_t>(i == 0 ? rng() % 3 : spaces), ' ');
    s += hostile && rng() % 7 == 0 ? bad[rng() % bad.size()] : words[rng() % words.size()];
  }
  s += std::string(rng() % 3, ' ');
  return s;
}

std::string train_sp(const std::vector<std::string>& lines, std::unordered_map<std::string, std::string> args) {
  args.emplace("vocab_size", "400");
  args.emplace("model_type", "bpe");
  args.emplace("normalization_rule_name", "identity");
  std::string error;
  const auto model = rho_test::train_sentencepiece(lines, args, &error);
  INFO(error);
  REQUIRE(error.empty());
  return model;
}

struct Comparison {
  size_t mismatches = 0, tokens = 0, unknowns = 0;
  std::string first;  // the first text encoded differently
};

// Every text through both encoders, twice (the second pass reads the BPE encoder's word cache).
Comparison compare_encoders(rho::SpTokenizer& own, rho::SpTokenizer& library, const std::vector<std::string>& texts) {
  Comparison c;
  for (int pass = 0; pass < 2; ++pass) {
    for (const auto& t : texts) {
      const auto a = own.encode(t), b = library.encode(t);
      c.tokens += b.size();
      c.unknowns += static_cast<size_t>(std::count(b.begin(), b.end(), 0));
      if (a != b && c.mismatches++ == 0) c.first = t;
    }
  }
  return c;
}

}  // namespace

TEST_CASE("SpTokenizer: librho's BPE encoder gives the library's ids on every option set", "[data][tokenizer][sp]") {
  std::mt19937 rng(7);
  std::vector<std::string> corpus;
  for (int i = 0; i < 3000; ++i) corpus.push_back(random_text(rng, false));
  std::vector<std::string> texts = {"", " ", "   ", "▁", "a", " a ", "  the  then  ", "\xff", "\xff\xff a",
                                    std::string("a\0b", 3), "日本語の😀😀 x"};
  for (int i = 0; i < 4000; ++i) texts.push_back(random_text(rng, true));
  struct Variant {
    const char* name;
    std::unordered_map<std::string, std::string> args;
    bool words;  // expected: the text is cut into words (no piece spans a cut)
  };
  const std::vector<Variant> variants = {
      {"Llama 2 style", {{"byte_fallback", "true"}, {"remove_extra_whitespaces", "false"}}, true},
      {"unk runs", {{"byte_fallback", "false"}, {"character_coverage", "0.98"}}, true},
      {"whitespace as suffix", {{"treat_whitespace_as_suffix", "true"}, {"byte_fallback", "true"}}, true},
      {"no dummy prefix", {{"add_dummy_prefix", "false"}, {"remove_extra_whitespaces", "false"}}, true},
      {"pieces across spaces", {{"split_by_whitespace", "false"}, {"byte_fallback", "true"}}, false},
      {"nmt_nfkc rules", {{"normalization_rule_name", "nmt_nfkc"}, {"byte_fallback", "true"}}, true},
      {"nfkc_cf rules", {{"normalization_rule_name", "nfkc_cf"}, {"character_coverage", "0.98"}}, true},
  };
  for (const auto& v : variants) {
    const std::string model = train_sp(corpus, v.args);
    auto own = rho::SpTokenizer::parse(model, v.name);
    auto library = rho::SpTokenizer::parse(model, v.name, rho::SpTokenizer::Engine::Library);
    INFO(v.name << ": " << own.library_reason());
    REQUIRE(own.own_encoder());
    REQUIRE_FALSE(library.own_encoder());
    const auto c = compare_encoders(own, library, texts);
    INFO("first mismatch: [" << c.first << "]");
    CHECK(c.mismatches == 0);
    CHECK(c.tokens > 50000);
    if (std::string(v.name) == "unk runs") CHECK(c.unknowns > 100);  // the unknown path was exercised
  }
}

TEST_CASE("SpTokenizer: librho's unigram encoder gives the library's ids on every option set", "[data][tokenizer][sp]") {
  std::mt19937 rng(11);
  std::vector<std::string> corpus;
  for (int i = 0; i < 3000; ++i) corpus.push_back(random_text(rng, false));
  std::vector<std::string> texts = {"", " ", "   ", "▁", "a", " a ", "  the  then  ", "\xff", "\xff\xff a",
                                    std::string("a\0b", 3), "日本語の😀😀 x", "ﬁ ① Ａ\u3000x\t\ty"};
  for (int i = 0; i < 4000; ++i) texts.push_back(random_text(rng, true));
  // Long texts: path scores summed over thousands of pieces, where float rounding decides between equal paths.
  for (int i = 0; i < 6; ++i) {
    std::string doc;
    for (int j = 0; j < 2000; ++j) doc += random_text(rng, i % 2 == 1) + (j % 5 ? " " : "\n");
    texts.push_back(doc);
  }
  struct Variant {
    const char* name;
    std::unordered_map<std::string, std::string> args;
  };
  const std::vector<Variant> variants = {
      {"rho_tokenize --train-tokenizer", {{"normalization_rule_name", "nmt_nfkc"}, {"byte_fallback", "true"}}},
      {"identity, unk runs", {{"character_coverage", "0.98"}}},
      {"nfkc_cf, whitespace as suffix", {{"normalization_rule_name", "nfkc_cf"}, {"treat_whitespace_as_suffix", "true"}}},
      {"no dummy prefix, spaces kept", {{"add_dummy_prefix", "false"}, {"remove_extra_whitespaces", "false"},
                                        {"byte_fallback", "true"}}},
      {"pieces across spaces", {{"split_by_whitespace", "false"}, {"normalization_rule_name", "nmt_nfkc"}}},
  };
  for (const auto& v : variants) {
    auto args = v.args;
    args["model_type"] = "unigram";
    args["hard_vocab_limit"] = "false";
    const std::string model = train_sp(corpus, args);
    auto own = rho::SpTokenizer::parse(model, v.name);
    auto library = rho::SpTokenizer::parse(model, v.name, rho::SpTokenizer::Engine::Library);
    INFO(v.name << ": " << own.library_reason());
    REQUIRE(own.own_encoder());
    const auto c = compare_encoders(own, library, texts);
    INFO("first mismatch: [" << c.first << "]");
    CHECK(c.mismatches == 0);
    CHECK(c.tokens > 100000);
    if (std::string(v.name) == "identity, unk runs") CHECK(c.unknowns > 100);
  }
}

namespace {

// A serialized ModelProto written field by field: pieces <unk> <s> </s> and then `pieces` (normal, with their
// scores), a model of `type` (1 unigram, 2 BPE), identity normalisation, no dummy prefix.
std::string tiny_model(int type, const std::vector<std::pair<std::string, float>>& pieces) {
  auto varint = [](uint64_t v) {
    std::string out;
    for (; v >= 0x80; v >>= 7) out += static_cast<char>((v & 0x7F) | 0x80);
    return out + static_cast<char>(v);
  };
  auto field = [&](int number, const std::string& bytes) { return varint((number << 3) | 2) + varint(bytes.size()) + bytes; };
  auto piece = [&](const std::string& text, float score, int piece_type) {
    std::string bits(4, '\0');
    std::memcpy(&bits[0], &score, 4);
    return field(1, field(1, text) + varint((2 << 3) | 5) + bits + varint(3 << 3) + varint(piece_type));
  };
  std::string m = piece("<unk>", 0, 2) + piece("<s>", 0, 3) + piece("</s>", 0, 3);
  for (const auto& [text, score] : pieces) m += piece(text, score, 1);
  m += field(2, varint(3 << 3) + varint(type));                             // trainer_spec.model_type
  m += field(3, field(1, "identity") + varint(3 << 3) + varint(0));         // no dummy prefix
  return m;
}

// BPE with pieces a b ab (ids 3 4 5), the given score for "ab" (and `a_score` for "a").
std::string tiny_bpe_model(float ab_score, float a_score = -1.0f) {
  return tiny_model(2, {{"a", a_score}, {"b", -2}, {"ab", ab_score}});
}

}  // namespace

TEST_CASE("SpTokenizer: scores SentencePiece versions order differently go to the library; ids outside are refused",
          "[data][tokenizer][sp]") {
  auto plain = rho::SpTokenizer::parse(tiny_bpe_model(-0.5f), "tiny.model");
  REQUIRE(plain.own_encoder());
  CHECK(plain.encode("abab b") == std::vector<int>{5, 5, 0, 4});  // "▁" is not a piece: one unknown
  auto nan = rho::SpTokenizer::parse(tiny_bpe_model(std::nanf("")), "tiny.model");
  CHECK_FALSE(nan.own_encoder());
  CHECK_THAT(nan.library_reason(), Contains("'ab' has a NaN score"));
  auto zeros = rho::SpTokenizer::parse(tiny_bpe_model(0.0f, -0.0f), "tiny.model");
  CHECK_FALSE(zeros.own_encoder());
  CHECK_THAT(zeros.library_reason(), Contains("-0.0 and +0.0"));
  CHECK(rho::SpTokenizer::parse(tiny_bpe_model(0.0f, 0.0f), "tiny.model").own_encoder());
  CHECK(plain.piece(5) == "ab");
  CHECK_THROWS_WITH(plain.piece(6), Contains("tiny.model: token id 6 is outside the vocabulary (size 6)"));
  CHECK_THROWS_WITH(plain.piece(-1), Contains("token id -1 is outside"));
}

TEST_CASE("SpTokenizer: the unigram encoder's tie rule and unknown penalty are the library's", "[data][tokenizer][sp]") {
  auto both = [](const std::string& model, const std::string& text) {
    auto own = rho::SpTokenizer::parse(model, "tiny.model");
    auto library = rho::SpTokenizer::parse(model, "tiny.model", rho::SpTokenizer::Engine::Library);
    REQUIRE(own.own_encoder());
    const auto ids = own.encode(text);
    CHECK(ids == library.encode(text));
    return ids;
  };
  // "a"+"b" and "ab" score -2 alike: the path found first (the piece from the earlier start) is kept.
  CHECK(both(tiny_model(1, {{"a", -1}, {"b", -1}, {"ab", -2}}), "ab") == std::vector<int>{5});
  CHECK(both(tiny_model(1, {{"a", -1}, {"b", -1}, {"ab", -2.5f}}), "ab") == std::vector<int>{3, 4});
  // Sums as the library forms them: "a" + "b" is exactly -(1 + 0.75 * 2^-23), above "ab" at -(1 + 2^-23), though
  // both round to the same float; the library compares the exact sum with the kept float, so "a" "b" wins.
  const float a = -std::nextafter(1.0f, 2.0f), b = std::ldexp(1.0f, -25);
  CHECK(both(tiny_model(1, {{"a", a}, {"b", b}, {"ab", a}}), "ab") == std::vector<int>{3, 4});
  // An unknown "y" scores the lowest score - 10 = -40: "x" + unknown = -20 loses to "xy" at -19.5 (with a penalty
  // of 9 it would win) and wins against "xy" at -20.5.
  CHECK(both(tiny_model(1, {{"x", 20}, {"xy", -19.5f}, {"z", -30}}), "xy") == std::vector<int>{4});
  CHECK(both(tiny_model(1, {{"x", 20}, {"xy", -20.5f}, {"z", -30}}), "xy") == std::vector<int>{3, 0});
}

TEST_CASE("SpTokenizer: models the encoder does not cover are encoded by the library, which says why",
          "[data][tokenizer][sp]") {
  std::mt19937 rng(3);
  std::vector<std::string> corpus;
  for (int i = 0; i < 2000; ++i) corpus.push_back(random_text(rng, false));
  const auto word = train_sp(corpus, {{"model_type", "word"}, {"hard_vocab_limit", "false"}});
  const auto chars = train_sp(corpus, {{"model_type", "char"}, {"hard_vocab_limit", "false"}});
  const auto user = train_sp(corpus, {{"user_defined_symbols", "<tool>"}});
  const auto user_unigram = train_sp(corpus, {{"user_defined_symbols", "<tool>"}, {"model_type", "unigram"},
                                              {"hard_vocab_limit", "false"}});
  for (const auto& [model, reason] : std::vector<std::pair<std::string, std::string>>{
           {word, "a word model"}, {chars, "a char model"}, {user, "user-defined pieces"},
           {user_unigram, "user-defined pieces"}}) {
    auto t = rho::SpTokenizer::parse(model, "m.model");
    CHECK_FALSE(t.own_encoder());
    CHECK_THAT(t.library_reason(), Contains(reason));
    CHECK_FALSE(t.encode("the answer is 42").empty());
  }
  // A unigram piece with a NUL byte: the library's trie keeps it only up to the NUL, which librho's does not copy.
  auto nul = rho::SpTokenizer::parse(tiny_model(1, {{std::string("a\0b", 3), -1}, {"b", -2}}), "nul.model");
  CHECK_FALSE(nul.own_encoder());
  CHECK_THAT(nul.library_reason(), Contains("a piece holds a NUL byte"));
  CHECK_THROWS_WITH(rho::SpTokenizer::parse("not a model", "bad.model"), Contains("bad.model: not a SentencePiece model"));
}

TEST_CASE("keep_host_heap: glibc takes the settings unless the environment gives malloc's own or asks for none",
          "[data]") {
#if defined(__GLIBC__) && !defined(__SANITIZE_ADDRESS__)  // (ASan's allocator takes no malloc settings)
  // Each variable set alone (any value the process had is put back), then none.
  const std::pair<const char*, const char*> given[] = {
      {"RHO_KEEP_HOST_HEAP", "0"}, {"MALLOC_TRIM_THRESHOLD_", "1"}, {"MALLOC_MMAP_THRESHOLD_", "1"},
      {"MALLOC_TOP_PAD_", "1"}, {"MALLOC_MMAP_MAX_", "1"}, {"GLIBC_TUNABLES", "glibc.malloc.top_pad=1"}};
  const std::pair<const char*, const char*> other[] = {{"RHO_KEEP_HOST_HEAP", "1"},
                                                       {"GLIBC_TUNABLES", "glibc.malloc.arena_max=2"}};
  auto with = [](const std::pair<const char*, const char*>& v) {
    const char* old = std::getenv(v.first);
    const std::optional<std::string> before = old ? std::optional<std::string>(old) : std::nullopt;
    ::setenv(v.first, v.second, 1);
    const bool kept = rho::keep_host_heap();
    if (before) ::setenv(v.first, before->c_str(), 1); else ::unsetenv(v.first);
    return kept;
  };
  for (const auto& v : given) CHECK_FALSE(with(v));
  for (const auto& v : other) CHECK(with(v));
#else
  SUCCEED("not glibc's malloc here");
#endif
}
