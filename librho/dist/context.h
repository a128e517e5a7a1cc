#pragma once
// Data parallelism on torch's c10d: one process per device, started by torchrun or SLURM's srun.
//
// DistEnv reads who this process is from the launcher's environment:
//   torchrun: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT (and its agent's store, see connect);
//   srun:     SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID; MASTER_ADDR / MASTER_PORT from the environment, else
//             127.0.0.1:29500 (single node; a multi-node job must export MASTER_ADDR, see docs/distributed.md);
//   RHO_PROCESS_GROUP: auto (default: a process group when the world size is above 1) or always (one process
//             joins a group of one, so its collectives run through NCCL or Gloo: the distributed code paths,
//             NCCL's streams included, checked on one device).
// DistContext joins the group (TCPStore rendezvous, then NCCL on CUDA or Gloo on CPU) and offers the few
// collectives librho needs. A single-process context (world size 1) makes every collective a no-op, so code
// that uses it reads the same either way. Every collective is bounded by the context's timeout: a dead or
// stuck peer ends in a rho::Error naming the operation, never a hang.
#include <ATen/core/Tensor.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace rho {

// The collectives' backend: none in a single-process context.
enum class Backend { None, Nccl, Gloo };
inline constexpr std::pair<Backend, const char*> kBackendNames[] = {
    {Backend::None, "none"}, {Backend::Nccl, "nccl"}, {Backend::Gloo, "gloo"}};
// RHO_PROCESS_GROUP: auto (a process group when the world size is above 1) or always (a group of one too).
enum class ProcessGroupMode { Auto, Always };
inline constexpr std::pair<ProcessGroupMode, const char*> kProcessGroupModeNames[] = {
    {ProcessGroupMode::Auto, "auto"}, {ProcessGroupMode::Always, "always"}};

struct DistEnv {
  int64_t rank = 0, world_size = 1, local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int port = 29500;
  bool group_of_one = false;  // RHO_PROCESS_GROUP=always: a process group even when world_size is 1
  std::string rank_from = "RANK", world_size_from = "WORLD_SIZE";  // the variables read (or SLURM's)
  // Reads the variables above; throws rho::Error naming a malformed or inconsistent one.
  static DistEnv from_env();
  // This process's GPU: cuda:(local_rank mod visible devices), so a launcher that hides all but one GPU per task
  // (srun --gpus-per-task=1) and one that shows all of them (torchrun) both work.
  at::Device cuda_device() const;
};

class DistContext {
 public:
  // The single-process context on `device`.
  explicit DistContext(at::Device device = at::kCPU);
  // Joins the group described by env (a single-process context when world_size is 1, unless group_of_one): NCCL
  // on cuda:local_rank when `cuda`, Gloo on the CPU otherwise.
  static std::shared_ptr<DistContext> connect(const DistEnv& env, bool cuda, std::chrono::milliseconds timeout);
  ~DistContext();
  DistContext(const DistContext&) = delete;
  DistContext& operator=(const DistContext&) = delete;

  int64_t rank() const { return rank_; }
  int64_t world_size() const { return world_; }
  int64_t local_rank() const { return local_rank_; }
  bool distributed() const { return grouped_; }  // collectives go through a process group (world size > 1, or 1 by choice)
  bool is_main() const { return rank_ == 0; }
  at::Device device() const { return device_; }  // where collectives run: cuda:local_rank (NCCL) or cpu
  Backend backend() const;

  // Blocking collectives, in place. CPU tensors are staged through the device when the backend needs it.
  void allreduce_sum(const at::Tensor& t) const;
  void broadcast(const at::Tensor& t, int64_t root) const;
  void send(const at::Tensor& t, int64_t dst) const;
  void recv(const at::Tensor& t, int64_t src) const;
  void barrier() const;
  // One value per rank, in rank order (an all-reduce of a world_size vector).
  std::vector<int64_t> allgather(int64_t value) const;
  std::vector<std::string> allgather(const std::string& value) const;  // any lengths, in rank order
  // Asynchronous all-reduce (sum) of a tensor on device(); wait_all() completes every pending one in order.
  void allreduce_sum_async(const at::Tensor& t);
  void wait_all();
  // Ends the process group normally, after the last collective, on every rank (pending all-reduces are waited
  // for first): NCCL destroys its communicators. Without it, NCCL aborts them when the context goes and warns that
  // the group was not destroyed; that is also what happens after a failure, when no rank should wait for another.
  void shutdown();

  // Collectives for sharded training, on contiguous tensors on device(). `full` has world_size() times the
  // elements of `part`: all_gather fills full with every rank's part in rank order; reduce_scatter_sum gives
  // each rank the sum over ranks of its slice of `full`. The *_async forms return a handle to wait() on
  // (handles may be waited on in any order); `what` names the operation in a failure's message.
  struct Pending;
  using Handle = std::shared_ptr<Pending>;
  Handle all_gather_async(const at::Tensor& full, const at::Tensor& part, const char* what);
  Handle reduce_scatter_sum_async(const at::Tensor& part, const at::Tensor& full, const char* what);
  void wait(const Handle& h) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int64_t rank_ = 0, world_ = 1, local_rank_ = 0;
  bool grouped_ = false;
  at::Device device_{at::kCPU};
};

}  // namespace rho
