#include "librho/dist/context.h"

#include <ATen/ops/zeros.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/cuda.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef RHO_WITH_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#ifdef RHO_WITH_NCCL
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <algorithm>
#include <cstdlib>
#include <deque>
#include <thread>

#include "librho/util/enum_names.h"
#include "librho/util/error.h"

namespace rho {

namespace {

// The first of `names` that is set, as an integer; `fallback` when none is.
int64_t env_int(std::initializer_list<const char*> names, int64_t fallback, const char** which = nullptr) {
  for (const char* name : names) {
    const char* v = std::getenv(name);
    if (!v) continue;
    char* end = nullptr;
    const long long x = std::strtoll(v, &end, 10);
    if (!*v || *end) throw Error(fmt::format("environment variable {}='{}' is not an integer", name, v));
    if (which) *which = name;
    return x;
  }
  return fallback;
}

}  // namespace

DistEnv DistEnv::from_env() {
  DistEnv e;
  // Each value from the first variable of its list that is set (torchrun's, then SLURM's); errors name that one.
  const char *rank_var = "RANK", *world_var = "WORLD_SIZE", *local_var = "LOCAL_RANK";
  e.rank = env_int({"RANK", "SLURM_PROCID"}, 0, &rank_var);
  e.world_size = env_int({"WORLD_SIZE", "SLURM_NTASKS"}, 1, &world_var);
  e.local_rank = env_int({"LOCAL_RANK", "SLURM_LOCALID"}, 0, &local_var);
  if (const char* a = std::getenv("MASTER_ADDR")) e.master_addr = a;
  const int64_t port = env_int({"MASTER_PORT"}, 29500);
  if (port <= 0 || port > 65535) throw Error(fmt::format("MASTER_PORT={} is not a TCP port", port));
  e.port = static_cast<int>(port);
  if (const char* g = std::getenv("RHO_PROCESS_GROUP")) {
    const auto mode = enum_from_name(kProcessGroupModeNames, g);
    if (!mode)
      throw Error(fmt::format("RHO_PROCESS_GROUP='{}' must be one of {}", g, enum_names(kProcessGroupModeNames)));
    e.group_of_one = *mode == ProcessGroupMode::Always;
  }
  if (e.world_size < 1) throw Error(fmt::format("world size {} ({}) must be >= 1", e.world_size, world_var));
  if (e.rank < 0 || e.rank >= e.world_size)
    throw Error(fmt::format("rank {} ({}) is outside world size {} ({})", e.rank, rank_var, e.world_size, world_var));
  if (e.local_rank < 0) throw Error(fmt::format("local rank {} ({}) is negative", e.local_rank, local_var));
  e.rank_from = rank_var;
  e.world_size_from = world_var;
  return e;
}

at::Device DistEnv::cuda_device() const {
  const int64_t n = static_cast<int64_t>(torch::cuda::device_count());
  if (n == 0) throw Error("a CUDA device was asked for but none is visible");
  return at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(local_rank % n));
}

struct DistContext::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> pg;
  Backend backend = Backend::None;
  std::chrono::milliseconds timeout{0};
  std::deque<c10::intrusive_ptr<c10d::Work>> pending;
  int64_t rank = 0, world = 1;
  mutable std::string roll_call_result;  // after the first failure

  mutable bool failed = false;  // a collective failed: the process group is abandoned, not torn down
  std::string attempt;           // torchrun's restart count: a restarted job's store keys are its own

  std::string key(const std::string& name) const { return "attempt" + attempt + "/" + name; }

  // Waits for one collective; a peer that died or stopped answering becomes a rho::Error naming it.
  //
  // A rank whose collective fails sets "abort" in the rendezvous store. Gloo collectives are waited for a second
  // at a time, with a look at that key in between: a rank blocked on a live peer that has itself failed (with
  // more than two ranks, not every survivor is connected to the dead one) stops within a second or two instead of
  // at the timeout. NCCL work is waited for without a timeout: that only makes the current CUDA stream wait for it
  // (a timeout would block the host until the collective finishes); NCCL's watchdog enforces the process group's
  // timeout.
  void wait(const c10::intrusive_ptr<c10d::Work>& work, const char* op) const {
    try {
      const auto type = work->retrieveOpType();
      const bool point_to_point = type == c10d::OpType::SEND || type == c10d::OpType::RECV ||
                                  type == c10d::OpType::RECVANYSOURCE;
      if (backend == Backend::Gloo && !point_to_point) {
        const auto start = std::chrono::steady_clock::now();
        for (;;) {
          try {
            work->wait(std::chrono::seconds(1));
            break;
          } catch (const std::exception&) {  // a real failure, the timeout, or only this second's slice
            if (work->isCompleted()) {  // finished meanwhile: returns, or raises the real error
              work->wait();
              break;
            }
            if (std::chrono::steady_clock::now() - start >= timeout) throw;
            if (store->check({key("abort")})) throw Error("another rank's collective failed");
          }
        }
      } else if (backend == Backend::Nccl) {
        work->wait();
      } else {
        work->wait(timeout);
      }
    } catch (const std::exception& e) {
      failed = true;
      try {
        store->set(key("abort"), std::vector<uint8_t>{1});
      } catch (const std::exception&) {  // the store is gone too: roll_call says so
      }
      throw Error(fmt::format("{} failed ({} backend, timeout {} s): {}; {}", op, enum_name(kBackendNames, backend),
                              timeout.count() / 1000.0,
                              roll_call(), e.what()));
    }
  }

  // Which ranks are gone. The backend's error names a peer's address at best, so every rank that sees a collective
  // fail checks in through the rendezvous store ("alive/<rank>") and waits up to 5 s (or the timeout) for the
  // others: the ranks that never check in are the failed or stuck ones.
  std::string roll_call() const {
    if (!roll_call_result.empty()) return roll_call_result;
    try {
      store->set(key(fmt::format("alive/{}", rank)), std::vector<uint8_t>{1});
      const auto deadline = std::chrono::steady_clock::now() + std::min<std::chrono::milliseconds>(timeout, std::chrono::seconds(5));
      std::vector<int64_t> missing;
      for (;;) {
        if (store->check({key("rollcall")})) {  // a rank that finished first: every survivor reports the same
          const auto v = store->get(key("rollcall"));
          roll_call_result.assign(v.begin(), v.end());
          return roll_call_result;
        }
        missing.clear();
        for (int64_t q = 0; q < world; ++q)
          if (!store->check({key(fmt::format("alive/{}", q))})) missing.push_back(q);
        if (missing.empty() || std::chrono::steady_clock::now() > deadline) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
      roll_call_result = missing.empty()
          ? std::string("every rank answered a roll call after the failure (a network fault, not a failed process)")
          : fmt::format("rank{} {} of {} failed or stopped responding (no answer to a roll call through the "
                        "rendezvous store)", missing.size() > 1 ? "s" : "", fmt::join(missing, ", "), world);
      store->set(key("rollcall"), std::vector<uint8_t>(roll_call_result.begin(), roll_call_result.end()));
    } catch (const std::exception& e) {
      roll_call_result = fmt::format("a peer process exited or stopped responding, and the rendezvous store is "
                                     "unreachable too (its server, rank 0 or the launcher's agent, is gone: {})",
                                     std::string(e.what()).substr(0, 200));
    }
    return roll_call_result;
  }
};

DistContext::DistContext(at::Device device) : impl_(std::make_unique<Impl>()), device_(device) {}
DistContext::~DistContext() {
  // After a failure the process group may still have a collective in flight that would make its destructor wait
  // for the timeout: it is abandoned instead (the process is about to exit with the error).
  if (impl_->failed) {
    (void)impl_->pg.release();
    (void)impl_->store.release();
  }
}

std::shared_ptr<DistContext> DistContext::connect(const DistEnv& env, bool cuda, std::chrono::milliseconds timeout) {
  const at::Device device = cuda ? env.cuda_device() : at::Device(at::kCPU);
  auto ctx = std::make_shared<DistContext>(device);
  ctx->rank_ = env.rank;
  ctx->world_ = env.world_size;
  ctx->local_rank_ = env.local_rank;
  if (env.world_size == 1 && !env.group_of_one) return ctx;
  auto& impl = *ctx->impl_;
  impl.timeout = timeout;
  impl.rank = env.rank;
  impl.world = env.world_size;
  if (const char* restarts = std::getenv("TORCHELASTIC_RESTART_COUNT")) impl.attempt = restarts;
  try {
    c10d::TCPStoreOptions so;
    so.port = static_cast<uint16_t>(env.port);
    // Under torchrun its agent already serves a store on MASTER_PORT; otherwise rank 0 serves it.
    const char* agent = std::getenv("TORCHELASTIC_USE_AGENT_STORE");
    so.isServer = env.rank == 0 && !(agent && std::string(agent) == "True");
    so.numWorkers = static_cast<size_t>(env.world_size);
    so.timeout = timeout;
    auto tcp = c10::make_intrusive<c10d::TCPStore>(env.master_addr, so);
    impl.store = c10::make_intrusive<c10d::PrefixStore>("librho", tcp);
  } catch (const std::exception& e) {
    throw Error(fmt::format("rendezvous at {}:{} failed within {} s (MASTER_ADDR / MASTER_PORT): {}",
                            env.master_addr, env.port, timeout.count() / 1000.0, e.what()));
  }
  try {
    if (cuda) {
#ifdef RHO_WITH_NCCL
      c10::cuda::set_device(device.index());
      auto opt = c10d::ProcessGroupNCCL::Options::create();
      opt->timeout = timeout;
      impl.pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(impl.store, env.rank, env.world_size, opt);
      impl.backend = Backend::Nccl;
#else
      throw Error("this librho was built without NCCL (no CUDA, or nccl.h not found): no multi-GPU training");
#endif
    } else {
#ifdef RHO_WITH_GLOO
      auto opt = c10d::ProcessGroupGloo::Options::create(timeout);
      opt->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
      impl.pg = c10::make_intrusive<c10d::ProcessGroupGloo>(impl.store, env.rank, env.world_size, opt);
      impl.backend = Backend::Gloo;
#else
      throw Error("this librho was built without gloo's headers (Debian: libgloo-dev): no multi-process CPU runs");
#endif
    }
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Error(fmt::format("creating the {} process group of {} ranks failed: {}", cuda ? "nccl" : "gloo",
                            env.world_size, e.what()));
  }
  ctx->grouped_ = true;
  ctx->barrier();  // every rank is connected before anyone starts work
  return ctx;
}

Backend DistContext::backend() const { return impl_->backend; }

namespace {
// NCCL reduces device tensors only: stage a CPU tensor there and back.
struct Staged {
  Staged(const at::Tensor& t, at::Device device) : orig(t) {
    work = t.device() == device ? t : t.to(device);
    if (!work.is_contiguous()) work = work.contiguous();
  }
  void finish() {
    if (!work.is_same(orig)) orig.copy_(work);
  }
  at::Tensor orig, work;
};
}  // namespace

void DistContext::allreduce_sum(const at::Tensor& t) const {
  if (!distributed()) return;
  Staged s(t, device_);
  std::vector<at::Tensor> v{s.work};
  impl_->wait(impl_->pg->allreduce(v, c10d::AllreduceOptions{}), "all-reduce");
  s.finish();
}

void DistContext::broadcast(const at::Tensor& t, int64_t root) const {
  if (!distributed()) return;
  Staged s(t, device_);
  std::vector<at::Tensor> v{s.work};
  c10d::BroadcastOptions o;
  o.rootRank = root;
  impl_->wait(impl_->pg->broadcast(v, o), "broadcast");
  s.finish();
}

void DistContext::send(const at::Tensor& t, int64_t dst) const {
  if (!distributed()) return;
  Staged s(t, device_);
  std::vector<at::Tensor> v{s.work};
  impl_->wait(impl_->pg->send(v, static_cast<int>(dst), 0), "send");
}

void DistContext::recv(const at::Tensor& t, int64_t src) const {
  if (!distributed()) return;
  Staged s(t, device_);
  std::vector<at::Tensor> v{s.work};
  impl_->wait(impl_->pg->recv(v, static_cast<int>(src), 0), "recv");
  s.finish();
}

void DistContext::barrier() const {
  if (!distributed()) return;
  // An all-reduce of one element: bounded by the timeout on every backend (NCCL's barrier is not).
  allreduce_sum(at::zeros({1}, at::kFloat));
}

std::vector<int64_t> DistContext::allgather(int64_t value) const {
  auto t = at::zeros({world_}, at::kLong);
  t[rank_] = value;
  allreduce_sum(t);
  return std::vector<int64_t>(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + world_);
}

std::vector<std::string> DistContext::allgather(const std::string& value) const {
  const auto lengths = allgather(static_cast<int64_t>(value.size()));
  const int64_t width = std::max<int64_t>(1, *std::max_element(lengths.begin(), lengths.end()));
  auto bytes = at::zeros({world_, width}, at::kLong);  // every rank's row, zeros elsewhere: the sum is the gather
  int64_t* row = bytes.data_ptr<int64_t>() + rank_ * width;
  for (size_t i = 0; i < value.size(); ++i) row[i] = static_cast<unsigned char>(value[i]);
  allreduce_sum(bytes);
  std::vector<std::string> out;
  for (int64_t q = 0; q < world_; ++q) {
    const int64_t* r = bytes.data_ptr<int64_t>() + q * width;
    out.emplace_back(r, r + lengths[static_cast<size_t>(q)]);  // each value back to a char
  }
  return out;
}

void DistContext::allreduce_sum_async(const at::Tensor& t) {
  if (!distributed()) return;
  TORCH_CHECK(t.device() == device_ && t.is_contiguous(), "allreduce_sum_async: a contiguous tensor on ", device_);
  std::vector<at::Tensor> v{t};
  impl_->pending.push_back(impl_->pg->allreduce(v, c10d::AllreduceOptions{}));
}

struct DistContext::Pending {
  c10::intrusive_ptr<c10d::Work> work;
  const char* what = "";
};

namespace {
void check_shard_pair(const at::Tensor& full, const at::Tensor& part, int64_t world, at::Device device, const char* op) {
  TORCH_CHECK(full.numel() == part.numel() * world && full.is_contiguous() && part.is_contiguous() &&
                  full.device() == device && part.device() == device && full.scalar_type() == part.scalar_type(),
              op, ": contiguous tensors on ", device, " with full = world_size x part");
}
}  // namespace

DistContext::Handle DistContext::all_gather_async(const at::Tensor& full, const at::Tensor& part, const char* what) {
  check_shard_pair(full, part, world_, device_, "all_gather_async");
  auto h = std::make_shared<Pending>();
  h->what = what;
  auto out = full, in = part;
  if (distributed())
    h->work = impl_->pg->_allgather_base(out, in, c10d::AllgatherOptions{});
  else
    full.copy_(part);
  return h;
}

DistContext::Handle DistContext::reduce_scatter_sum_async(const at::Tensor& part, const at::Tensor& full,
                                                          const char* what) {
  check_shard_pair(full, part, world_, device_, "reduce_scatter_sum_async");
  auto h = std::make_shared<Pending>();
  h->what = what;
  auto out = part, in = full;
  if (distributed())
    h->work = impl_->pg->_reduce_scatter_base(out, in, c10d::ReduceScatterOptions{});
  else
    part.copy_(full);
  return h;
}

void DistContext::wait(const Handle& h) const {
  if (!h || !h->work) return;
  auto work = std::move(h->work);
  h->work.reset();
  impl_->wait(work, h->what);
}

void DistContext::wait_all() {
  while (!impl_->pending.empty()) {
    auto w = impl_->pending.front();
    impl_->pending.pop_front();
    impl_->wait(w, "gradient all-reduce");
  }
}

void DistContext::shutdown() {
  if (!impl_->pg || impl_->failed) return;
  wait_all();
  impl_->pg->shutdown();
}

}  // namespace rho
