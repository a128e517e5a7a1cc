#include <ATen/ATen.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "helpers.h"
#include "librho/io/hf_checkpoint.h"
#include "librho/io/safetensors.h"
#include "librho/util/error.h"
#include "librho/util/files.h"

using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {
rho::LlamaConfig small(bool tied) {
  auto c = rho::test::tiny_llama(64, 32);
  c.tie_word_embeddings = tied;
  return c;
}
}  // namespace

TEST_CASE("HF checkpoint: save and load round trip, single file and sharded, fp32 and bf16", "[hf]") {
  rho::test::TempDir dir;
  for (bool tied : {false, true}) {
    rho::Llama m(small(tied));
    m->reset_parameters(42);
    auto x = at::randint(0, 64, {2, 8});
    auto ref = m->forward(x);

    rho::save_hf_model(*m, dir.str("single"));
    CHECK(fs::exists(dir.str("single/model.safetensors")));
    CHECK(at::equal(rho::load_hf_model(dir.str("single"))->forward(x), ref));

    rho::save_hf_model(*m, dir.str("sharded"), {"float32", 20000});
    CHECK(fs::exists(dir.str("sharded/model.safetensors.index.json")));
    CHECK_FALSE(fs::exists(dir.str("sharded/model.safetensors")));
    CHECK(at::equal(rho::load_hf_model(dir.str("sharded"))->forward(x), ref));

    rho::save_hf_model(*m, dir.str("bf16"), {"bfloat16"});
    auto f = rho::SafetensorsFile::open(dir.str("bf16/model.safetensors"));
    CHECK(f.entry("model.embed_tokens.weight").dtype == at::kBFloat16);
    CHECK(f.contains("lm_head.weight") == !tied);
    CHECK(at::allclose(rho::load_hf_model(dir.str("bf16"))->forward(x), ref, 0.05, 0.05));
  }
}

TEST_CASE("HF checkpoint: mismatches, missing and truncated files name the tensor and file", "[hf]") {
  rho::test::TempDir dir;
  rho::Llama m(small(false));
  rho::save_hf_model(*m, dir.str("ok"));
  // Shape mismatch: a model with another intermediate size.
  auto c = small(false);
  c.intermediate_size = 48;
  rho::Llama other(c);
  CHECK_THROWS_WITH(rho::load_hf_weights(*other, dir.str("ok")),
                    Contains("model.layers.0.mlp.gate_proj.weight") && Contains("48x32"));
  // Missing tensor: a checkpoint without lm_head loaded into an untied model.
  rho::Llama tied(small(true));
  rho::save_hf_model(*tied, dir.str("tied"));
  CHECK_THROWS_WITH(rho::load_hf_weights(*m, dir.str("tied")), Contains("no tensor 'lm_head.weight'"));
  // Unexpected tensor: an untied checkpoint into a model with fewer layers.
  auto c1 = small(false);
  c1.num_layers = 1;
  rho::Llama one(c1);
  CHECK_THROWS_WITH(rho::load_hf_weights(*one, dir.str("ok")), Contains("model.layers.1.") && Contains("no place"));
  // Truncated weights.
  const auto w = dir.str("ok/model.safetensors");
  const auto bytes = rho::read_text_file(w);
  rho::write_file_atomic(w, bytes.substr(0, bytes.size() / 2));
  CHECK_THROWS_WITH(rho::load_hf_model(dir.str("ok")), Contains("model.safetensors") && Contains("truncated"));
  CHECK_THROWS_WITH(rho::load_hf_model(dir.str("none")), Contains("config.json"));
}
