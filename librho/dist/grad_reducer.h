#pragma once
// Gradient all-reduce for data parallelism, overlapped with the backward pass (what DDP does in Python).
//
// Parameters are grouped into buckets of about bucket_mb, in reverse registration order: the order in which
// backward produces their gradients. A post-accumulate-grad hook on each parameter marks it ready; once every
// parameter of a bucket is ready its gradients are copied into one flat buffer and an asynchronous all-reduce
// (SUM) starts, while backward goes on with earlier layers. Buckets are launched strictly in bucket order, so
// every rank issues the same collectives in the same order. finish() waits for all and writes the sums back.
//
// The sum, not the mean: librho normalises each rank's loss by the global token count, so the summed gradient
// is exactly the gradient of the global batch's loss.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace rho {

class DistContext;

class GradBucketReducer {
 public:
  GradBucketReducer(std::vector<at::Tensor> params, DistContext& dist, double bucket_mb = 25);
  ~GradBucketReducer();  // removes the hooks
  GradBucketReducer(const GradBucketReducer&) = delete;
  GradBucketReducer& operator=(const GradBucketReducer&) = delete;
  // The next backward reduces: call before the last micro-batch's backward (earlier ones only accumulate).
  void arm();
  // Launches buckets whose parameters got no gradient (zeros), waits for every all-reduce, writes them back.
  void finish();
  size_t num_buckets() const { return buckets_.size(); }
  int64_t buffer_bytes() const;  // the buckets' flat buffers (none with one process)

 private:
  struct Bucket {
    std::vector<size_t> params;  // indices into params_
    at::Tensor flat;
    size_t waiting = 0;          // parameters not yet ready in this backward
  };
  friend struct GradReadyHook;
  void ready(size_t param);
  void launch_ready_buckets();

  std::vector<at::Tensor> params_;
  std::vector<size_t> bucket_of_;
  std::vector<Bucket> buckets_;
  DistContext& dist_;
  size_t next_launch_ = 0;
  bool armed_ = false;
};

}  // namespace rho
