#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cmath>
#include <thread>

#include "helpers.h"
#include "librho/dist/context.h"
#include "librho/dist/sharded.h"
#include "librho/slm/slm_loss.h"
#include "librho/util/error.h"

using Catch::Matchers::Contains;

namespace {

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

// Runs body(ctx) on `world` threads, each a rank of one Gloo group over loopback; false (and a printed reason)
// when this build has no Gloo backend.
template <class F>
bool on_ranks(int64_t world, F body) {
  const int port = free_port();
  std::vector<std::thread> threads;
  std::vector<std::string> errors(world);
  for (int64_t r = 0; r < world; ++r)
    threads.emplace_back([&, r] {
      try {
        rho::DistEnv env;
        env.rank = r;
        env.world_size = world;
        env.port = port;
        auto ctx = rho::DistContext::connect(env, false, std::chrono::seconds(30));
        body(*ctx);
      } catch (const std::exception& e) {
        errors[r] = e.what();
      }
    });
  for (auto& t : threads) t.join();
  if (errors[0].find("built without gloo") != std::string::npos) {
    WARN("skipped: " << errors[0]);
    return false;
  }
  for (const auto& e : errors) REQUIRE(e.empty());
  return true;
}

// Three optimizer steps of two micro-batches each of a 3-layer model under sharding parameters, on `ctx`: this
// rank's checkpoint tensors (on the CPU) and the layer gathers.
std::pair<std::vector<at::Tensor>, rho::GatherStats> sharded_steps(rho::DistContext& ctx) {
  auto cfg = rho::test::tiny_llama(64, 32);
  cfg.num_layers = 3;
  rho::Llama model(cfg);
  model->reset_parameters(5);
  model->to(ctx.device());
  rho::ShardedAdamWOptions adam;
  adam.weight_decay = 0.1;
  rho::ShardedModel sharded(model, ctx, rho::Sharding::Parameters, at::kFloat, adam);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(3);
  for (int step = 0; step < 3; ++step) {
    for (int mb = 0; mb < 2; ++mb) {
      const auto tokens = at::randint(0, 64, {2, 17}, gen).to(ctx.device());
      const auto loss = model->token_loss(tokens.narrow(1, 0, 16), tokens.narrow(1, 1, 16)).mean();
      sharded.before_backward(mb == 1);
      loss.backward();
      sharded.after_backward();
    }
    sharded.clip_grad_norm(1.0);
    sharded.step(1e-2, at::Tensor());
  }
  std::vector<at::Tensor> state;
  for (const auto& [name, t] : sharded.shard_state()) state.push_back(t.cpu().clone());
  return {state, sharded.gather_stats()};
}

// The same steps without a process group and in a group of one (RHO_PROCESS_GROUP=always: every gather and
// reduce-scatter through the backend), with the same gathers (2 x (2 x 3 - 1) a step). On the CPU bit-identical;
// on CUDA each tensor within 1e-4 relative (and 1e-7 absolute, NaN unequal), in case a backward kernel adds in
// another order from run to run: a gather read before it arrived, or a step's stale weights, would move weights
// by about lr = 1e-2 and the moments by far more than 1e-4 of themselves.
void group_of_one_equals_none(bool cuda) {
  rho::DistEnv env;
  env.port = free_port();
  env.group_of_one = true;
  std::shared_ptr<rho::DistContext> group;
  try {
    group = rho::DistContext::connect(env, cuda, std::chrono::seconds(60));
  } catch (const std::exception& e) {
    if (std::string(e.what()).find("built without") == std::string::npos) throw;
    WARN("skipped: " << e.what());
    return;
  }
  REQUIRE(group->distributed());
  rho::DistContext alone(group->device());
  const auto [want, want_gathers] = sharded_steps(alone);
  const auto [got, got_gathers] = sharded_steps(*group);
  REQUIRE(got.size() == want.size());
  size_t equal = 0, close = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    equal += at::equal(got[i], want[i]);
    close += at::allclose(got[i], want[i], /*rtol=*/1e-4, /*atol=*/1e-7);
  }
  INFO(equal << " of " << got.size() << " tensors bit-identical, " << close << " close");
  CHECK((cuda ? close : equal) == got.size());
  CHECK(got_gathers.issued == 3 * 2 * 5);
  CHECK(got_gathers.prefetched == 3 * 2 * 4);
  CHECK(want_gathers.issued == got_gathers.issued);
  CHECK(want_gathers.prefetched == got_gathers.prefetched);
  group->shutdown();  // NCCL: its communicators destroyed here, not aborted when the group goes
}

}  // namespace

TEST_CASE("sharding parameters in a process group of one (Gloo) equals no group, bit for bit", "[dist]") {
  group_of_one_equals_none(false);
}

TEST_CASE("sharding parameters in a process group of one (NCCL) equals no group", "[dist][cuda]") {
  if (!rho::test::cuda_or_skip()) return;
  group_of_one_equals_none(true);
}

TEST_CASE("global-scope selection over 3 ranks equals one process's over the batch concatenated in rank order",
          "[dist][slm]") {
  // Few distinct scores (many ties at any threshold), NaN scores on valid tokens, invalid tokens, and ranks with
  // different amounts of data: two micro-batches per rank.
  const int64_t world = 3;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(7);
  std::vector<std::vector<at::Tensor>> scores(world), valid(world);
  std::vector<at::Tensor> all_scores, all_valid;
  for (int64_t r = 0; r < world; ++r)
    for (int mb = 0; mb < 2; ++mb) {
      const int64_t rows = 2 + r;
      auto v = at::rand({rows, 16}, gen) < 0.8;
      auto s = at::randint(0, 6, {rows, 16}, gen, at::kFloat) - 2.5;
      s = at::where(at::rand({rows, 16}, gen) < 0.05, at::full_like(s, NAN), s);
      s = at::where(v, s, at::full_like(s, NAN));
      scores[r].push_back(s);
      valid[r].push_back(v);
      all_scores.push_back(s);
      all_valid.push_back(v);
    }
  const rho::ExcessLossSelector sel(rho::SLMOptions{});
  for (const double ratio : {0.05, 0.37, 0.5, 0.93, 1.0}) {
    rho::SelectionStats want_stats;
    const auto want = sel.select(all_scores, all_valid, ratio, 0, &want_stats);
    // One process: the same as select().
    rho::DistContext single;
    rho::SelectionStats one_stats;
    const auto one = sel.select_global(all_scores, all_valid, ratio, 0, single, &one_stats);
    for (size_t i = 0; i < want.size(); ++i) CHECK(at::equal(one[i], want[i]));
    CHECK(one_stats.weight_sum == want_stats.weight_sum);
    CHECK(one_stats.nan_scores == want_stats.nan_scores);
    // Three ranks: each gets its slice of the one-process masks.
    std::vector<std::vector<at::Tensor>> got(world);
    std::vector<rho::SelectionStats> stats(world);
    if (!on_ranks(world, [&](const rho::DistContext& ctx) {
          got[ctx.rank()] = sel.select_global(scores[ctx.rank()], valid[ctx.rank()], ratio, 0, ctx, &stats[ctx.rank()]);
        }))
      return;
    double kept = 0;
    for (int64_t r = 0; r < world; ++r) {
      kept += stats[r].weight_sum;
      for (int mb = 0; mb < 2; ++mb) CHECK(at::equal(got[r][mb], want[r * 2 + mb]));
    }
    INFO("ratio " << ratio);
    CHECK(kept == want_stats.weight_sum);
  }
}

TEST_CASE("collectives (sum, broadcast, send/recv, allgather) and launcher variables named in errors", "[dist]") {
  on_ranks(2, [](const rho::DistContext& ctx) {
    auto t = at::full({3}, static_cast<double>(ctx.rank() + 1), at::kDouble);
    ctx.allreduce_sum(t);
    CHECK(at::equal(t, at::full({3}, 3.0, at::kDouble)));
    auto b = at::full({2}, ctx.rank() == 1 ? 5.0f : 0.0f);
    ctx.broadcast(b, 1);
    CHECK(at::equal(b, at::full({2}, 5.0f)));
    auto m = at::full({4}, static_cast<float>(ctx.rank()));
    if (ctx.rank() == 0) ctx.recv(m, 1);
    else ctx.send(at::full({4}, 9.0f), 0);
    CHECK(at::equal(m, at::full({4}, ctx.rank() == 0 ? 9.0f : 1.0f)));
    CHECK(ctx.allgather(10 + ctx.rank()) == std::vector<int64_t>{10, 11});
    const std::string mine = ctx.rank() == 0 ? std::string("\xffsha\0x", 6) : "";  // any bytes, any lengths
    CHECK(ctx.allgather(mine) == std::vector<std::string>{std::string("\xffsha\0x", 6), ""});
  });
  CHECK(rho::DistContext().allgather(std::string("alone")) == std::vector<std::string>{"alone"});
  ::setenv("WORLD_SIZE", "two", 1);
  CHECK_THROWS_WITH(rho::DistEnv::from_env(), Contains("WORLD_SIZE='two' is not an integer"));
  ::setenv("WORLD_SIZE", "2", 1);
  ::setenv("RANK", "2", 1);
  CHECK_THROWS_WITH(rho::DistEnv::from_env(), Contains("rank 2 (RANK) is outside world size 2 (WORLD_SIZE)"));
  ::unsetenv("RANK");
  ::unsetenv("WORLD_SIZE");
  ::setenv("SLURM_NTASKS", "3", 1);  // SLURM's variables when torchrun's are not set, and errors name them
  ::setenv("SLURM_PROCID", "3", 1);
  CHECK_THROWS_WITH(rho::DistEnv::from_env(), Contains("rank 3 (SLURM_PROCID) is outside world size 3 (SLURM_NTASKS)"));
  ::setenv("SLURM_PROCID", "2", 1);
  CHECK(rho::DistEnv::from_env().rank == 2);
  ::unsetenv("SLURM_PROCID");
  ::unsetenv("SLURM_NTASKS");
  CHECK(rho::DistEnv::from_env().world_size == 1);
}
