#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>
#include <tuple>
#include <nlohmann/json.hpp>

#include "helpers.h"
#include "librho/data/tokenize.h"
#include "librho/eval/answer.h"
#include "librho/eval/lm.h"
#include "librho/eval/tasks.h"
#include "librho/eval/text_tokenizer.h"
#include "librho/util/error.h"

namespace fs = std::filesystem;
using Catch::Matchers::Contains;

namespace {
// Large initial weights give peaked logits, so cached and uncached passes never disagree on a near-tie.
rho::Llama tiny_model(uint64_t seed, int64_t vocab = 64, int64_t max_pos = 64) {
  auto c = rho::test::tiny_llama(vocab, max_pos);
  c.initializer_range = 0.5;
  rho::Llama m(c);
  m->reset_parameters(seed);
  m->eval();
  return m;
}

// Natural-log probabilities of `tokens[from:]`, each given everything before it, from one uncached pass.
std::vector<double> brute_logprobs(rho::LlamaImpl& m, const std::vector<int64_t>& tokens, size_t from) {
  at::NoGradGuard g;
  auto x = at::tensor(at::ArrayRef<int64_t>(tokens), at::kLong).unsqueeze(0);
  auto logp = at::log_softmax(m.forward(x), -1)[0];
  std::vector<double> out;
  for (size_t i = from; i < tokens.size(); ++i) out.push_back(logp[i - 1][tokens[i]].item<double>());
  return out;
}

void write_lines(const std::string& path, const std::vector<std::string>& lines) {
  std::ofstream f(path);
  for (const auto& l : lines) f << l << "\n";
}

// A SentencePiece model trained by rho_tokenize's library side on a small arithmetic corpus: the dataset folder.
std::string trained_tokenizer(const rho::test::TempDir& dir) {
  std::ofstream f(dir.str("corpus.txt"));
  for (int i = 0; i < 400; ++i)
    f << "Question: Tom has " << i % 17 << " apples and buys " << i % 7 << " more. How many apples does he have? "
      << "Answer: " << i % 17 << " + " << i % 7 << " = " << i % 17 + i % 7 << ". The answer is " << i % 17 + i % 7
      << ".\n";
  f.close();
  rho::TokenizeOptions o;
  o.inputs = {dir.str("corpus.txt")};
  o.out_dir = dir.str("tok");
  o.train_vocab_size = 300;
  o.train_model_type = "bpe";
  o.corpus.text_unit = rho::TextUnit::Line;
  o.threads = 1;
  o.progress = false;
  rho::tokenize_corpus(o);
  return dir.str("tok");
}

fs::path shared_data() {
  if (const char* v = std::getenv("RHO_SHARED_DATA")) return v;
  return fs::path(RHO_SOURCE_DIR) / ".." / "shared" / "data";
}
}  // namespace

TEST_CASE("answer extraction: #### first, then 'the answer is', then the last number", "[eval]") {
  CHECK(rho::extract_answer("so 3 + 4 = 7\n#### 7") == "7");
  CHECK(rho::extract_answer("#### 1,234\nextra 5") == "1,234");
  CHECK(rho::extract_answer("She has 5 - 2 = 3 left. The answer is 3.") == "3");
  CHECK(rho::extract_answer("The answer is 4. Wait, the ANSWER IS $1,250.50 in total") == "$1,250.50");
  CHECK(rho::extract_answer("He pays 12 then 30 dollars") == "30");
  CHECK(rho::extract_answer("no digits here") == "");
  CHECK(rho::extract_answer("The answer is unknown, but 8 is close") == "8");  // no number after: last number
  CHECK(rho::extract_answer("the temperature fell to -5 degrees") == "-5");
  CHECK(rho::find_numbers("16-3-4=9") == std::vector<std::string>{"16", "3", "4", "9"});
  CHECK(rho::find_numbers("lists 3,4,5 and 1,000,000 and 12,34") ==
        std::vector<std::string>{"3", "4", "5", "1,000,000", "12", "34"});
  CHECK(rho::find_numbers("x2 costs -$3.50.") == std::vector<std::string>{"2", "-$3.50"});
}

TEST_CASE("number normalisation: commas, $, trailing dot, numeric comparison", "[eval]") {
  CHECK(rho::normalize_answer("$1,234.") == "1234");
  CHECK(rho::normalize_answer(" 3.0 ") == "3");
  CHECK(rho::normalize_answer("-2.50") == "-2.5");
  CHECK(rho::normalize_answer("-0") == "0");
  CHECK(rho::normalize_answer("seven") == "seven");
  CHECK(rho::answers_match("3.0", "3"));
  CHECK(rho::answers_match("$18", "18"));
  CHECK(rho::answers_match("1,000", "1000."));
  CHECK(rho::answers_match("0.5", ".5"));
  CHECK_FALSE(rho::answers_match("3.01", "3"));
  CHECK_FALSE(rho::answers_match("", "3"));
  CHECK_FALSE(rho::answers_match("", ""));
  CHECK_FALSE(rho::parse_number("inf"));
  CHECK_FALSE(rho::parse_number("0x10"));
  CHECK_FALSE(rho::parse_number("3 apples"));
  CHECK(*rho::parse_number("1e3") == 1000);
}

TEST_CASE("answer extraction on every GSM8K test answer equals its #### value", "[eval]") {
  const auto path = shared_data() / "gsm8k" / "test.jsonl";
  if (!fs::exists(path)) {
    WARN("SKIPPED: " << path << " is absent (set RHO_SHARED_DATA)");
    std::cout << "SKIPPED [eval]: no GSM8K data at " << path << "\n";
    return;
  }
  std::ifstream f(path);
  std::string line;
  int64_t n = 0, with_commas = 0;
  while (std::getline(f, line)) {
    const auto j = nlohmann::json::parse(line);
    const auto answer = j.at("answer").get<std::string>();
    const auto marker = answer.rfind("#### ");
    REQUIRE(marker != std::string::npos);
    const auto expected = answer.substr(marker + 5);  // the reference's own final value, as written
    with_commas += expected.find(',') != std::string::npos;
    INFO("line " << n + 1 << ": " << expected);
    const auto got = rho::extract_answer(answer);
    CHECK(rho::answers_match(got, expected));
    CHECK(rho::normalize_answer(got) == rho::normalize_answer(expected));
    // The same value in the few-shot prompt's style, with the rationale's other numbers before it.
    const auto rationale = answer.substr(0, marker);
    CHECK(rho::answers_match(rho::extract_answer(rationale + "The answer is " + expected + "."), expected));
    CHECK(rho::answers_match(rho::extract_answer(rationale + "So the total is $" + expected + "."), expected));
    ++n;
  }
  CHECK(n == 1319);
  CHECK(with_commas > 0);  // thousands separators occur and are handled
}

TEST_CASE("templates fill item fields, command-line escapes work", "[eval]") {
  const std::string item = R"({"question": "2+2?", "n": 7, "list": [1]})";
  CHECK(rho::fill_template("Q: {question} ({n}) {not a field} {}\nA:", item, "f:3") ==
        "Q: 2+2? (7) {not a field} {}\nA:");
  CHECK_THROWS_WITH(rho::fill_template("{missing}", item, "f:3"), Contains("f:3") && Contains("'missing'"));
  CHECK_THROWS_WITH(rho::fill_template("{list}", item, "f:3"), Contains("string or a number"));
  CHECK(rho::unescape(R"(a\n\nb\tc\\n)") == "a\n\nb\tc\\n");
}

TEST_CASE("KV-cached greedy generation equals argmax of uncached full passes", "[eval]") {
  for (uint64_t seed : {1, 2, 3}) {
    auto m = tiny_model(seed);
    // seed 3: a prompt of 20 tokens
    const std::vector<int64_t> prompt = seed < 3 ? std::vector<int64_t>{5, 9, 13, 2, 40, 33, 7}
                                                 : std::vector<int64_t>{5, 9, 13, 2, 40, 33, 7, 1, 1, 8, 60, 61, 3, 4,
                                                                        22, 17, 9, 9, 50, 2};
    rho::GenerateOptions o;
    o.max_new_tokens = 24;
    const auto g = rho::greedy_generate(*m, prompt, o);
    CHECK(g.stop_reason == "max_new_tokens");
    std::vector<int64_t> seq = prompt;
    {
      at::NoGradGuard ng;
      for (int i = 0; i < 24; ++i) {
        auto logits = m->forward(at::tensor(at::ArrayRef<int64_t>(seq), at::kLong).unsqueeze(0));
        seq.push_back(logits[0][-1].argmax().item<int64_t>());
      }
    }
    INFO("seed " << seed);
    CHECK(g.ids == std::vector<int64_t>(seq.begin() + prompt.size(), seq.end()));

    // Stop rules: EOS (not returned), the callback, the context limit, the vocabulary limit.
    o.eos_id = g.ids[2];
    const auto first_eos = std::find(g.ids.begin(), g.ids.end(), o.eos_id) - g.ids.begin();
    auto e = rho::greedy_generate(*m, prompt, o);
    CHECK(e.stop_reason == "eos");
    CHECK(e.ids == std::vector<int64_t>(g.ids.begin(), g.ids.begin() + first_eos));
    o.eos_id = -1;
    auto s = rho::greedy_generate(*m, prompt, o, [](const std::vector<int64_t>& ids) { return ids.size() == 4; });
    CHECK(s.stop_reason == "stop");
    CHECK(s.ids.size() == 4);
    auto c = rho::greedy_generate(*m, std::vector<int64_t>(61, 3), o);
    CHECK(c.stop_reason == "context");
    CHECK(c.ids.size() == 4);  // positions 61, 62, 63 hold three of them; the fourth needs no position
    o.vocab_limit = 10;
    for (int64_t id : rho::greedy_generate(*m, prompt, o).ids) CHECK(id < 10);
  }
  auto m = tiny_model(1);
  CHECK_THROWS_WITH(rho::greedy_generate(*m, std::vector<int64_t>(64, 1), {}), Contains("max_position_embeddings=64"));
}

TEST_CASE("a ragged KV cache: each row computes what its sequence computes alone", "[eval]") {
  auto m = tiny_model(11);
  at::manual_seed(5);
  const std::vector<int64_t> lengths = {3, 9, 1, 14};
  std::vector<std::vector<int64_t>> prompts;
  for (int64_t len : lengths) {
    auto t = at::randint(1, 64, {len}, at::kLong);
    prompts.emplace_back(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + len);
  }
  c10::InferenceMode guard;
  // Rows 0-3 hold the prompts (rows 1 and 3 from one right-padded prefill), then three steps of one token per row;
  // at the second step row 2 leaves and row 0 is refilled with another prompt.
  auto cache = rho::KVCache::ragged(4, 20);
  auto prefill = [&](const std::vector<size_t>& which, const std::vector<int64_t>& rows) {
    int64_t width = 0;
    for (size_t p : which) width = std::max<int64_t>(width, prompts[p].size());
    auto tokens = at::zeros({static_cast<int64_t>(which.size()), width}, at::kLong);
    for (size_t i = 0; i < which.size(); ++i)
      tokens[i].narrow(0, 0, prompts[which[i]].size()).copy_(at::tensor(at::ArrayRef<int64_t>(prompts[which[i]])));
    rho::KVCache grown;
    m->hidden_states(tokens, &grown);
    for (size_t i = 0; i < which.size(); ++i) cache.set_row(rows[i], grown, i, prompts[which[i]].size());
  };
  prefill({1, 3}, {1, 3});
  prefill({0}, {0});
  prefill({2}, {2});
  std::vector<std::vector<int64_t>> seqs = {prompts[0], prompts[1], prompts[2], prompts[3]};
  auto check_step = [&](const std::vector<int64_t>& fed) {
    const auto h = m->hidden_states(at::tensor(at::ArrayRef<int64_t>(fed)).view({-1, 1}), &cache);
    for (size_t r = 0; r < fed.size(); ++r) {
      seqs[r].push_back(fed[r]);
      CHECK(cache.row_lengths[r] == static_cast<int64_t>(seqs[r].size()));
      const auto alone = m->hidden_states(at::tensor(at::ArrayRef<int64_t>(seqs[r])).unsqueeze(0));
      INFO("row " << r << " of " << fed.size());
      CHECK(at::allclose(h[r][0], alone[0][-1], 1e-5, 1e-5));
    }
  };
  check_step({7, 8, 9, 10});
  cache.keep_rows({0, 1, 3});  // row 2 leaves
  seqs.erase(seqs.begin() + 2);
  std::vector<std::vector<int64_t>> more = {{4, 4, 2, 60, 1, 1}};
  prompts.push_back(more[0]);
  prefill({4}, {0});  // another prompt takes row 0
  seqs[0] = more[0];
  check_step({11, 12, 13});
  check_step({63, 0, 5});  // lengths now 8, 12 and 17
  // A shorter prompt takes the longest row: its old columns past the new length must stay unseen.
  prompts.push_back({2, 2, 2, 30, 31, 2, 2, 2});
  prefill({5}, {2});
  seqs[2] = prompts[5];
  check_step({1, 2, 3});  // lengths 9, 13, 9: row 2 reads 13 columns, 4 of them left from its old sequence
  // Rows of one length (9, 9, 9) attend without a mask, also over a refilled row with old columns past its end.
  prompts.push_back({8, 7, 6, 5, 4, 3, 2, 1, 9});
  prefill({6}, {1});
  seqs[1] = prompts[6];
  check_step({4, 5, 6});
  CHECK(!cache.step_mask.defined());
  CHECK_THROWS_WITH(m->hidden_states(at::ones({2, 1}, at::kLong), &cache), Contains("one token for each of its 3 rows"));
  cache.row_lengths[1] = 20;
  CHECK_THROWS_WITH(m->hidden_states(at::ones({3, 1}, at::kLong), &cache), Contains("full (20 positions)"));
}

TEST_CASE("batched generation: every prompt gets what it gets alone, whatever the batch", "[eval]") {
  auto m = tiny_model(11);
  at::manual_seed(5);
  std::vector<std::vector<int64_t>> prompts;
  for (int64_t len : {3, 9, 1, 14, 5, 2, 11}) {
    auto t = at::randint(1, 64, {len}, at::kLong);
    prompts.emplace_back(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + len);
  }
  // Rows leave at different steps: a stop rule for prompt 1, EOS, max_new_tokens, the context limit for the
  // longest, and a prompt whose first token is EOS (it never takes a row).
  rho::GenerateOptions o;
  o.max_new_tokens = 20;
  o.eos_id = 5;
  prompts.push_back(std::vector<int64_t>(62, 3));  // ends at EOS here
  prompts.push_back(std::vector<int64_t>(63, 9));  // 63 + 20 > max_position_embeddings 64: "context"
  auto stop = [](size_t prompt, const std::vector<int64_t>& ids) { return prompt == 1 && ids.size() == 4; };
  std::vector<rho::Generation> alone;
  std::set<std::string> reasons;
  for (size_t p = 0; p < prompts.size(); ++p) {
    alone.push_back(rho::greedy_generate(*m, prompts[p], o, [&](const std::vector<int64_t>& ids) { return stop(p, ids); }));
    reasons.insert(alone.back().stop_reason);
  }
  CHECK(reasons.count("stop"));
  CHECK(reasons.count("context"));
  CHECK(reasons.count("eos"));
  CHECK(reasons.count("max_new_tokens"));
  // 0: all at once; 1-3: rows are refilled as sequences end. Fixed-shape steps (the CUDA-graph path, run eagerly
  // here): idle rows stay until half the rows are idle, keys read in buckets of 128 (past max_position 64: all).
  // Prefill widths padded to a bucket (CUDA's default 128 is capped by max_position 64).
  struct Case {
    int64_t batch;
    bool fixed;
    int64_t bucket;
  };
  for (const auto& [batch, fixed, bucket] : std::vector<Case>{{0, false, 0},
                                                              {1, false, 0},
                                                              {2, false, 0},
                                                              {3, false, 0},
                                                              {9, false, 0},
                                                              {0, true, 0},
                                                              {2, true, 0},
                                                              {3, true, 0},
                                                              {5, true, 0},
                                                              {1, false, 8},
                                                              {3, false, 16},
                                                              {0, false, 128},
                                                              {3, true, 8}}) {
    o.batching.batch_size = batch;
    o.batching.cuda_graphs = fixed;
    o.batching.prefill_bucket = bucket;
    rho::DecodeStats stats;
    o.stats = &stats;
    std::vector<size_t> finished;
    o.on_finish = [&](size_t p, const rho::Generation& g) {
      finished.push_back(p);
      CHECK(!g.stop_reason.empty());
    };
    const auto got = rho::greedy_generate_batch(*m, prompts, o, stop);
    REQUIRE(got.size() == prompts.size());
    CHECK(finished.size() == prompts.size());
    CHECK(stats.steps >= 19);  // the longest generation's steps at least
    CHECK(stats.graph_replays == 0);  // no CUDA here
    CHECK((stats.prefill_padding > 0) == (bucket > 1));  // the CPU pads only when a bucket is given
    CHECK(std::set<size_t>(finished.begin(), finished.end()).size() == prompts.size());
    for (size_t p = 0; p < prompts.size(); ++p) {
      INFO("batch " << batch << (fixed ? " (fixed shapes)" : "") << ", prefill bucket " << bucket << ", prompt " << p);
      CHECK(got[p].ids == alone[p].ids);
      CHECK(got[p].stop_reason == alone[p].stop_reason);
    }
  }
  o.batching.batch_size = -1;
  CHECK_THROWS_WITH(rho::greedy_generate_batch(*m, prompts, o), Contains("batch_size must be >= 0"));
  o.batching.batch_size = 2;
  o.batching.prefill_bucket = -1;
  CHECK_THROWS_WITH(rho::greedy_generate_batch(*m, prompts, o), Contains("prefill_bucket must be >= 0"));
}

TEST_CASE("batched generation: a prefix every prompt starts with is run once", "[eval]") {
  auto m = tiny_model(13);
  at::manual_seed(9);
  const auto few_shot = at::randint(1, 64, {30}, at::kLong);
  std::vector<std::vector<int64_t>> prompts;
  for (int64_t own : {1, 5, 12, 2, 8}) {  // each prompt: the 30 shared tokens, then its own
    auto t = at::cat({few_shot, at::randint(1, 64, {own}, at::kLong)});
    prompts.emplace_back(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel());
  }
  prompts.push_back(std::vector<int64_t>(prompts[0].begin(), prompts[0].begin() + 26));  // a prompt inside the prefix
  rho::GenerateOptions o;
  o.max_new_tokens = 12;
  std::vector<rho::Generation> alone;  // one prompt: no shared prefix, each prefilled whole
  for (const auto& p : prompts) {
    rho::DecodeStats one;
    o.stats = &one;
    alone.push_back(rho::greedy_generate(*m, p, o));
    CHECK(one.prefill_tokens == static_cast<int64_t>(p.size()));
  }
  for (const auto& [batch, fixed, bucket] :
       std::vector<std::tuple<int64_t, bool, int64_t>>{{0, false, 0}, {2, false, 0}, {4, true, 0}, {2, false, 8}}) {
    o.batching.batch_size = batch;
    o.batching.cuda_graphs = fixed;
    o.batching.prefill_bucket = bucket;  // the prompts' own tokens padded after the shared prefix
    rho::DecodeStats stats;
    o.stats = &stats;
    const auto got = rho::greedy_generate_batch(*m, prompts, o);
    // The shared prefix is 25 tokens (the short prompt keeps its last one), run once.
    int64_t want = 25;
    for (const auto& p : prompts) want += static_cast<int64_t>(p.size()) - 25;
    CHECK(stats.prefill_tokens == want);
    for (size_t p = 0; p < prompts.size(); ++p) {
      INFO("batch " << batch << ", prefill bucket " << bucket << ", prompt " << p);
      CHECK(got[p].ids == alone[p].ids);
    }
  }
  o.batching.prefill_bucket = 0;
  // Below 16 shared tokens every prompt is prefilled whole.
  rho::DecodeStats stats;
  o.stats = &stats;
  o.batching.batch_size = 0;
  const std::vector<std::vector<int64_t>> short_shared = {{1, 2, 3, 4, 5}, {1, 2, 3, 9, 9, 9}};
  const auto got = rho::greedy_generate_batch(*m, short_shared, o);
  CHECK(stats.prefill_tokens == 11);
  for (size_t p = 0; p < short_shared.size(); ++p) CHECK(got[p].ids == rho::greedy_generate(*m, short_shared[p], o).ids);
}

TEST_CASE("batched generation on CUDA: CUDA graphs give the tokens of eager steps", "[eval][cuda]") {
  if (!rho::test::cuda_or_skip()) return;
  auto c = rho::test::tiny_llama(64, 512);
  c.initializer_range = 0.5;
  rho::Llama m(c);
  m->reset_parameters(3);
  m->to(at::Device(at::kCUDA));
  m->eval();
  at::manual_seed(7);
  std::vector<std::vector<int64_t>> prompts;
  // Keys read cross buckets of 128; the longest prompt comes last, so it may run (87 new tokens) past 256 columns
  // into the capacity's bucket (200 + 90 - 1 = 289 columns).
  for (int64_t len : {3, 40, 1, 140, 9, 77, 120, 5, 16, 33, 2, 200}) {
    auto t = at::randint(1, 64, {len}, at::kLong);
    prompts.emplace_back(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + len);
  }
  rho::GenerateOptions o;
  o.max_new_tokens = 90;
  o.eos_id = 5;
  o.batching.batch_size = 4;
  auto stop = [](size_t prompt, const std::vector<int64_t>& ids) { return ids.size() == 10 + 7 * prompt; };
  const auto eager = rho::greedy_generate_batch(*m, prompts, o, stop);
  o.batching.cuda_graphs = true;
  rho::DecodeStats stats;
  o.stats = &stats;
  const auto graphed = rho::greedy_generate_batch(*m, prompts, o, stop);
  WARN("CUDA graphs: " << stats.steps << " steps, " << stats.graph_replays << " replayed, " << stats.graph_captures
                       << " graphs recorded");
  CHECK(stats.steps > 100);
  CHECK(stats.graph_replays == stats.steps);  // no step fell back to eager decoding
  CHECK(stats.graph_captures >= 3);           // key buckets 128 and 256, and new row counts as rows leave
  CHECK(stats.graph_captures < stats.steps / 4);
  for (size_t p = 0; p < prompts.size(); ++p) {
    INFO("prompt " << p);
    CHECK(graphed[p].ids == eager[p].ids);
    CHECK(graphed[p].stop_reason == eager[p].stop_reason);
  }
}

TEST_CASE("continuation log-probabilities equal an uncached forward pass", "[eval]") {
  auto m = tiny_model(4);
  const std::vector<int64_t> prompt = {1, 8, 20, 3};
  // Lengths 1, 3, 0, 2 and 6: the longer ones run as one right-padded batch.
  const std::vector<std::vector<int64_t>> conts = {{7}, {9, 9, 30}, {}, {63, 0}, {5, 6, 7, 8, 9, 10}};
  const auto got = rho::continuation_logprobs(*m, prompt, conts);
  REQUIRE(got.size() == 5);
  CHECK(got[2].empty());
  for (size_t c = 0; c < conts.size(); ++c) {
    auto seq = prompt;
    seq.insert(seq.end(), conts[c].begin(), conts[c].end());
    const auto want = brute_logprobs(*m, seq, prompt.size());
    REQUIRE(got[c].size() == want.size());
    for (size_t i = 0; i < want.size(); ++i) CHECK(got[c][i] == Approx(want[i]).margin(1e-4));
  }
}

TEST_CASE("continuation log-probabilities after a shared prefix's keys and values equal those without", "[eval]") {
  auto m = tiny_model(4);
  std::vector<int64_t> prompt;
  for (int64_t i = 0; i < 20; ++i) prompt.push_back((i * 7 + 3) % 64);
  const std::vector<std::vector<int64_t>> conts = {{7}, {9, 9, 30}, {63, 0}};
  const auto shared = rho::prefill_cache(*m, {prompt.begin(), prompt.begin() + 17});
  const auto with = rho::continuation_logprobs(*m, prompt, conts, &shared);
  const auto without = rho::continuation_logprobs(*m, prompt, conts);
  for (size_t c = 0; c < conts.size(); ++c) {
    REQUIRE(with[c].size() == without[c].size());
    for (size_t i = 0; i < with[c].size(); ++i) CHECK(with[c][i] == Approx(without[c][i]).margin(1e-5));
  }
  CHECK(shared.length() == 17);  // left as it was
  // One row a pass (the smallest memory bound) gives the same numbers as one pass for all.
  const auto alone = rho::continuation_logprobs(*m, prompt, conts, &shared, /*pass_positions=*/1);
  for (size_t c = 0; c < conts.size(); ++c)
    for (size_t i = 0; i < with[c].size(); ++i) CHECK(alone[c][i] == Approx(with[c][i]).margin(1e-5));
  CHECK_THROWS_WITH(rho::continuation_logprobs(*m, {prompt.begin(), prompt.begin() + 17}, conts, &shared),
                    Contains("leaves nothing of the prompt"));
  // Shared prefixes: at least 16 tokens, and at least one token of each prompt left its own.
  std::vector<int64_t> a(20), b(20);
  for (int64_t i = 0; i < 20; ++i) a[i] = b[i] = i;
  b[18] = 50;
  CHECK(rho::shared_prefix_length({a, b}) == 18);
  CHECK(rho::shared_prefix_length({a, {a.begin(), a.begin() + 17}}) == 16);
  CHECK(rho::shared_prefix_length({a, {a.begin(), a.begin() + 16}}) == 0);  // 15 in common: not worth a pass
  CHECK(rho::shared_prefix_length({a}) == 0);
}

TEST_CASE("held-out loss: mean over every window's targets, document starts left out", "[eval]") {
  rho::test::TempDir dir;
  rho::test::write_token_dataset(dir.str("d"), rho::test::pattern_documents(12, 64, 7), 150, 64, 0);
  auto data = rho::TokenDataset::open(dir.str("d"));
  auto m = tiny_model(5);
  rho::HeldoutOptions o;
  o.seq_len = 16;
  o.batch_size = 3;
  o.progress = false;
  const auto got = rho::heldout_loss(m, data, o);
  // Brute force: window w is tokens [16w, 16w + 16] (the last one shorter), each target after a non-EOS token.
  const int64_t n = data.num_tokens();
  double sum = 0;
  int64_t count = 0, starts = 0;
  for (int64_t s = 0; s < n - 1; s += 16) {
    const int64_t len = std::min<int64_t>(16, n - 1 - s);
    const auto w = data.slice(s, len + 1);
    std::vector<int64_t> ids(w.data_ptr<int64_t>(), w.data_ptr<int64_t>() + len + 1);
    const auto lp = brute_logprobs(*m, ids, 1);
    for (int64_t i = 1; i <= len; ++i) {
      if (ids[i - 1] == 0) {
        ++starts;
        continue;
      }
      sum -= lp[i - 1];
      ++count;
    }
  }
  CHECK(got.tokens == count);
  CHECK(got.document_starts == starts);
  CHECK(starts == 11);  // every document but the first starts after an EOS
  CHECK(got.loss() == Approx(sum / count).epsilon(1e-5));
  CHECK(got.perplexity() == Approx(std::exp(sum / count)).epsilon(1e-5));
}

TEST_CASE("multiple choice picks the highest log-probability choice (brute force, real tokenizer)", "[eval]") {
  rho::test::TempDir dir;
  const auto tok = rho::TextTokenizer::load(trained_tokenizer(dir));
  CHECK(rho::TextTokenizer::load(dir.str("tok/tokenizer.model")).vocab_size() == tok.vocab_size());
  auto m = tiny_model(6, 320, 256);
  write_lines(dir.str("mc.jsonl"),
              {R"({"question": "Tom has 3 apples and buys 4 more.", "choices": ["7", "6", "The answer is 12"], "answer": 0})",
               "",
               R"({"question": "How many apples?", "choices": ["1", "two apples", "3"], "answer": "3"})",
               R"({"question": "5 + 5?", "choices": ["10", "55"], "answer": 1})"});
  write_lines(dir.str("shots.txt"), {"Question: 1 + 1?", "Answer: 2.", "", "Question: 2 + 2?", "Answer: 4.", "", ""});
  rho::ChoiceOptions o;
  o.items = dir.str("mc.jsonl");
  o.prompt_file = dir.str("shots.txt");
  o.progress = false;
  const auto r = rho::run_choice(*m, tok, o);
  REQUIRE(r.predictions.size() == 3);
  CHECK(r.predictions[1].line == 3);
  CHECK(r.predictions[1].gold == 2);
  const std::vector<std::string> questions = {"Tom has 3 apples and buys 4 more.", "How many apples?", "5 + 5?"};
  const std::vector<std::vector<std::string>> choices = {{"7", "6", "The answer is 12"}, {"1", "two apples", "3"},
                                                         {"10", "55"}};
  int64_t correct = 0, correct_norm = 0;
  std::vector<std::vector<int64_t>> prompts;
  for (size_t i = 0; i < 3; ++i) {
    const auto& p = r.predictions[i];
    std::vector<int64_t> prompt = {tok.bos_id()};
    const auto body = tok.encode("Question: 1 + 1?\nAnswer: 2.\n\nQuestion: 2 + 2?\nAnswer: 4.\n\n\nQuestion: " +
                                 questions[i] + "\nAnswer:");
    prompt.insert(prompt.end(), body.begin(), body.end());
    prompts.push_back(prompt);
    double best = -INFINITY, best_norm = -INFINITY;
    int64_t arg = -1, arg_norm = -1;
    for (size_t c = 0; c < choices[i].size(); ++c) {
      auto seq = prompt;
      const auto ids = tok.encode(choices[i][c]);
      seq.insert(seq.end(), ids.begin(), ids.end());
      double total = 0;
      for (double v : brute_logprobs(*m, seq, prompt.size())) total += v;
      CHECK(p.logprob[c] == Approx(total).margin(1e-3));
      CHECK(p.tokens[c] == static_cast<int64_t>(ids.size()));
      if (total > best) best = total, arg = static_cast<int64_t>(c);
      const double norm = total / static_cast<double>(choices[i][c].size());
      if (norm > best_norm) best_norm = norm, arg_norm = static_cast<int64_t>(c);
    }
    CHECK(p.predicted == arg);
    CHECK(p.predicted_norm == arg_norm);
    correct += arg == p.gold;
    correct_norm += arg_norm == p.gold;
  }
  CHECK(r.correct == correct);
  CHECK(r.correct_norm == correct_norm);
  CHECK(rho::shared_prefix_length(prompts) >= 16);  // the few-shot examples ran once, before every item

  write_lines(dir.str("bad.jsonl"), {R"({"question": "q", "choices": ["a", "b"], "answer": 2})"});
  o.items = dir.str("bad.jsonl");
  CHECK_THROWS_WITH(rho::run_choice(*m, tok, o), Contains("bad.jsonl:1") && Contains("'answer'"));
}

TEST_CASE("few-shot: prompt, greedy generation cut at the stop string, extracted answers", "[eval]") {
  rho::test::TempDir dir;
  const auto tok = rho::TextTokenizer::load(trained_tokenizer(dir));
  auto m = tiny_model(8, 320, 128);
  write_lines(dir.str("items.jsonl"), {R"({"question": "Tom has 3 apples and buys 4 more.", "answer": "3 + 4 = 7\n#### 7"})",
                                       R"({"question": "Sam has 2 apples.", "answer": "The answer is 2."})"});
  write_lines(dir.str("shots.txt"), {"Question: 1 + 1?", "Answer: 1 + 1 = 2. The answer is 2."});
  rho::FewShotOptions o;
  o.items = dir.str("items.jsonl");
  o.prompt_file = dir.str("shots.txt");
  o.separator = " ";
  o.stop = {"Question"};
  o.max_new_tokens = 12;
  o.progress = false;
  const auto r = rho::run_fewshot(*m, tok, o);
  REQUIRE(r.predictions.size() == 2);
  CHECK(r.predictions[0].gold == "7");
  CHECK(r.predictions[1].gold == "2");
  CHECK(r.truncated_prompts == 0);
  for (const auto& p : r.predictions) {
    std::vector<int64_t> prompt = {tok.bos_id()};
    const auto body = tok.encode("Question: 1 + 1?\nAnswer: 1 + 1 = 2. The answer is 2. " + p.question);
    prompt.insert(prompt.end(), body.begin(), body.end());
    CHECK(p.prompt_tokens == static_cast<int64_t>(prompt.size()));
    rho::GenerateOptions g;
    g.max_new_tokens = 12;
    g.eos_id = tok.eos_id();
    g.vocab_limit = tok.vocab_size();
    auto text = tok.decode(rho::greedy_generate(*m, prompt, g).ids);
    if (const auto at = text.find("Question"); at != std::string::npos) text.erase(at);
    CHECK(p.generation == text);
    CHECK(p.predicted == rho::normalize_answer(rho::extract_answer(text)));
    CHECK(p.correct == rho::answers_match(p.predicted, p.gold));
  }
  const auto json = nlohmann::json::parse([&] {
    rho::EvalReport rep;
    rep.fewshot.push_back(r);
    return rep.to_json();
  }());
  CHECK(json["fewshot"][0]["predictions"].size() == 2);
  CHECK(json["fewshot"][0]["items"] == 2);

  // A few-shot text longer than the context is cut from the left, keeping BOS and the question.
  std::string long_shots;
  for (int i = 0; i < 60; ++i) long_shots += "Question: Tom has 3 apples. Answer: The answer is 3. ";
  write_lines(dir.str("long.txt"), {long_shots});
  o.prompt_file = dir.str("long.txt");
  const auto t = rho::run_fewshot(*m, tok, o);
  CHECK(t.truncated_prompts == 2);
  for (const auto& p : t.predictions) CHECK(p.prompt_tokens == 128 - 12);

  write_lines(dir.str("noanswer.jsonl"), {R"({"question": "q", "answer": "none"})"});
  o.items = dir.str("noanswer.jsonl");
  CHECK_THROWS_WITH(rho::run_fewshot(*m, tok, o), Contains("noanswer.jsonl:1") && Contains("no answer"));
}
