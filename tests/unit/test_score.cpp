#include <ATen/ATen.h>

#include <catch2/catch.hpp>
#include <filesystem>

#include "helpers.h"
#include "librho/data/token_dataset.h"
#include "librho/score/token_scorer.h"
#include "librho/util/files.h"

namespace fs = std::filesystem;

namespace {
rho::Llama scorer_model() {
  rho::Llama m(rho::test::tiny_llama(64, 64));
  m->reset_parameters(17);
  return m;
}
}  // namespace

TEST_CASE("TokenScorer: per-token losses equal full-logits cross-entropy, aligned and strided", "[score]") {
  rho::test::TempDir dir;
  rho::test::write_token_dataset(dir.str("d"), rho::test::pattern_documents(30, 64, 4), 400, 64, 0);
  auto data = rho::TokenDataset::open(dir.str("d"));
  auto model = scorer_model();
  const int64_t n = data.num_tokens();
  for (int64_t stride : {int64_t(0), int64_t(8), int64_t(31)}) {
    rho::ScoreOptions o;
    o.seq_len = 32;
    o.stride = stride;
    o.batch_size = 5;
    o.rows_per_chunk = 37;
    rho::TokenScorer scorer(model, "h", o);
    auto got = scorer.score_range(data, 0, n);
    REQUIRE(got.numel() == n);
    CHECK(std::isnan(got[0].item<float>()));
    // Reference: for each target p, the window that scores it, through full logits and cross-entropy.
    const int64_t T = 32, S = stride ? stride : T;
    auto want = at::full({n}, NAN);
    at::NoGradGuard g;
    for (int64_t k = 0; k * S < n - 1; ++k) {
      const int64_t start = k * S, len = std::min(start + T, n - 1) - start;
      if (len <= 0) break;
      auto w = data.slice(start, len + 1).unsqueeze(0);
      auto logits = model->forward(w.narrow(1, 0, len));
      auto ce = at::cross_entropy_loss(logits.view({len, 64}), w.narrow(1, 1, len).reshape(-1), {}, at::Reduction::None);
      const int64_t lo = k == 0 ? 1 : start + T - S + 1;
      for (int64_t p = lo; p <= start + len; ++p) want[p] = ce[p - start - 1];
      if (start + T >= n - 1) break;
    }
    INFO("stride " << stride);
    CHECK(at::allclose(got.narrow(0, 1, n - 1), want.narrow(0, 1, n - 1), 1e-5, 1e-5));
    // A sub-range equals the same positions of the whole.
    CHECK(at::allclose(scorer.score_range(data, 101, 333), got.narrow(0, 101, 232), 1e-6, 1e-6));
  }
}

TEST_CASE("rho_score outputs: resumable, byte-identical after an interruption, split by rank", "[score]") {
  rho::test::TempDir dir;
  rho::test::write_token_dataset(dir.str("d"), rho::test::pattern_documents(60, 64, 5), 500, 64, 0);
  auto data = rho::TokenDataset::open(dir.str("d"));
  REQUIRE(data.manifest().shards.size() >= 4);
  rho::ScoreOptions o;
  o.seq_len = 32;
  o.progress = false;
  auto model = scorer_model();
  const auto hash = model->weights_sha256();
  auto whole = rho::TokenScorer(model, hash, o).score_dataset(data, dir.str("whole"));
  CHECK(whole.manifest_written);
  CHECK(whole.shards_scored == static_cast<int64_t>(data.manifest().shards.size()));

  // Three "processes" by rank: only the last to finish writes the manifest; outputs equal the single run.
  for (int64_t r = 0; r < 3; ++r) {
    o.rank = r;
    o.world_size = 3;
    auto s = rho::TokenScorer(model, hash, o).score_dataset(data, dir.str("split"));
    CHECK(s.manifest_written == (r == 2));
    int64_t mine = 0;
    for (size_t i = r; i < data.manifest().shards.size(); i += 3) ++mine;
    CHECK(s.shards_scored == mine);
  }
  for (const auto& e : fs::directory_iterator(dir.str("whole")))
    CHECK(rho::read_text_file(e.path().string()) ==
          rho::read_text_file(dir.str("split/" + e.path().filename().string())));

  // An interrupted run: one shard missing, one corrupted, a stray temporary. The rerun redoes exactly those.
  o.rank = 0;
  o.world_size = 1;
  fs::remove(dir.str("split/manifest.json"));
  fs::remove(dir.str("split/losses-00001.bin"));
  rho::write_file_atomic(dir.str("split/losses-00002.bin"), std::string("garbage"));
  rho::write_file_atomic(dir.str("split/losses-00003.bin.tmp.999"), std::string("half"));
  auto rerun = rho::TokenScorer(model, hash, o).score_dataset(data, dir.str("split"));
  CHECK(rerun.shards_scored == 2);
  CHECK(rerun.manifest_written);
  for (const auto& e : fs::directory_iterator(dir.str("whole")))
    CHECK(rho::read_text_file(e.path().string()) ==
          rho::read_text_file(dir.str("split/" + e.path().filename().string())));
  // The loss dataset lines up with the tokens and refuses another dataset.
  auto losses = rho::LossDataset::open(dir.str("whole"));
  losses.check_matches(data);
  auto pos = at::arange(100, 140).view({2, 20});
  CHECK(at::equal(losses.gather(pos), losses.shard_losses(0).narrow(0, 100, 40).view({2, 20})));
  CHECK(whole.to_string().find("mean loss") != std::string::npos);
}

TEST_CASE("TokenScorer refuses tokens beyond the model's vocabulary and windows beyond its positions, creating nothing",
          "[score]") {
  rho::test::TempDir dir;
  rho::test::write_token_dataset(dir.str("d"), rho::test::pattern_documents(10, 64, 4), 400, 64, 0);
  auto data = rho::TokenDataset::open(dir.str("d"));
  rho::Llama small(rho::test::tiny_llama(32, 64));  // vocabulary 32 < the dataset's 64
  rho::ScoreOptions o;
  o.seq_len = 32;
  o.progress = false;
  CHECK_THROWS_WITH(rho::TokenScorer(small, "h", o).score_dataset(data, dir.str("out1")),
                    Catch::Matchers::Contains(dir.str("d")) && Catch::Matchers::Contains("tokenizer vocabulary 64") &&
                        Catch::Matchers::Contains("vocab_size 32"));
  CHECK_FALSE(fs::exists(dir.str("out1")));
  auto model = scorer_model();  // 64 positions
  o.seq_len = 128;
  CHECK_THROWS_WITH(rho::TokenScorer(model, "h", o).score_dataset(data, dir.str("out2")),
                    Catch::Matchers::Contains("seq_len 128 exceeds the model's max_position_embeddings 64"));
  CHECK_FALSE(fs::exists(dir.str("out2")));
  CHECK_THROWS(rho::TokenScorer(model, "h", o).score_range(data, 0, 100));
}
