// CUDA kernel of rho::topk_mask: a radix select over order-preserving 32-bit keys, 8 bits per pass, then an
// ordered pass that keeps the first ties by index. Everything stays on the device (no host synchronisation):
// k is clamped to the number of non-NaN scores on the device, and each pass reads its state from memory.
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>
#include <cub/device/device_scan.cuh>

#include "librho/kernels/topk_mask.h"
#include "librho/kernels/topk_key.h"

namespace rho {
namespace {

constexpr int kThreads = 256;
constexpr int kItems = 16;                     // elements per thread in the ordered passes
constexpr int kChunk = kThreads * kItems;      // elements per block in the ordered passes

struct SelectState {
  unsigned long long nan_count;
  long long remaining;    // elements still to take at or below the current prefix
  long long k_eff;        // min(k, non-NaN count)
  unsigned int prefix, prefix_mask;
  unsigned long long hist[256];
};

template <typename T>
__global__ void make_keys(const T* __restrict__ x, uint32_t* __restrict__ keys, int64_t n, SelectState* st) {
  unsigned int nans = 0;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const uint32_t key = kernels::topk_key(static_cast<float>(x[i]));
    keys[i] = key;
    nans += key == 0;
  }
  using Reduce = cub::BlockReduce<unsigned int, kThreads>;
  __shared__ typename Reduce::TempStorage tmp;
  const unsigned int total = Reduce(tmp).Sum(nans);
  if (threadIdx.x == 0 && total) atomicAdd(&st->nan_count, (unsigned long long)total);
}

// k from the host, or (k_dev non-null) from device memory.
__global__ void init_state(SelectState* st, int64_t n, int64_t k, const int64_t* k_dev) {
  if (k_dev) k = *k_dev < 0 ? 0 : *k_dev;
  const long long valid = n - (long long)st->nan_count;
  st->k_eff = k < valid ? k : valid;
  st->remaining = st->k_eff;
  st->prefix = 0;
  st->prefix_mask = 0;
  for (int d = 0; d < 256; ++d) st->hist[d] = 0;
}

__global__ void histogram(const uint32_t* __restrict__ keys, int64_t n, SelectState* st, int shift) {
  __shared__ unsigned int hist[256];
  hist[threadIdx.x] = 0;
  __syncthreads();
  if (st->k_eff > 0) {
    const uint32_t prefix = st->prefix, pmask = st->prefix_mask;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
      const uint32_t key = keys[i];
      if ((key & pmask) == prefix) atomicAdd(&hist[(key >> shift) & 0xffu], 1u);
    }
  }
  __syncthreads();
  if (hist[threadIdx.x]) atomicAdd(&st->hist[threadIdx.x], (unsigned long long)hist[threadIdx.x]);
}

// One thread walks the 256 bins from the top: the bin holding the remaining-th largest key fixes 8 more bits.
__global__ void choose_digit(SelectState* st, int shift) {
  if (st->k_eff > 0) {
    long long remaining = st->remaining;
    int digit = 255;
    for (; digit > 0 && (long long)st->hist[digit] < remaining; --digit) remaining -= st->hist[digit];
    st->remaining = remaining;
    st->prefix |= (unsigned int)digit << shift;
    st->prefix_mask |= 0xffu << shift;
  }
  for (int d = 0; d < 256; ++d) st->hist[d] = 0;
}

// Pass 1: keys above the threshold are kept; each block counts its ties (in its contiguous chunk).
__global__ void mark_above(const uint32_t* __restrict__ keys, int64_t n, const SelectState* st,
                           bool* __restrict__ mask, long long* __restrict__ block_ties) {
  const bool any = st->k_eff > 0;
  const uint32_t t = st->prefix;
  const int64_t base = (int64_t)blockIdx.x * kChunk;
  unsigned int ties = 0;
  for (int j = 0; j < kItems; ++j) {
    const int64_t i = base + j * kThreads + threadIdx.x;
    if (i < n) {
      const uint32_t key = keys[i];
      mask[i] = any && key > t;
      ties += any && key == t;
    }
  }
  using Reduce = cub::BlockReduce<unsigned int, kThreads>;
  __shared__ typename Reduce::TempStorage tmp;
  const unsigned int total = Reduce(tmp).Sum(ties);
  if (threadIdx.x == 0) block_ties[blockIdx.x] = total;
}

// Pass 2: ties are ranked in index order (block offset + in-block scan); the first `remaining` are kept.
__global__ void mark_ties(const uint32_t* __restrict__ keys, int64_t n, const SelectState* st,
                          bool* __restrict__ mask, const long long* __restrict__ tie_offsets) {
  const long long want = st->remaining;
  long long rank = tie_offsets[blockIdx.x];
  if (st->k_eff <= 0 || rank >= want) return;
  const uint32_t t = st->prefix;
  const int64_t base = (int64_t)blockIdx.x * kChunk;
  using Scan = cub::BlockScan<int, kThreads>;
  __shared__ typename Scan::TempStorage tmp;
  for (int j = 0; j < kItems; ++j) {  // rows of kThreads consecutive elements, in index order
    const int64_t i = base + j * kThreads + threadIdx.x;
    const int tie = (i < n && keys[i] == t) ? 1 : 0;
    int before, row_total;
    Scan(tmp).ExclusiveSum(tie, before, row_total);
    if (tie && rank + before < want) mask[i] = true;
    rank += row_total;
    __syncthreads();
  }
}

std::tuple<at::Tensor, at::Tensor> topk_mask_launch(const at::Tensor& scores, int64_t k, const int64_t* k_dev) {
  const c10::cuda::CUDAGuard guard(scores.device());
  const auto flat = scores.contiguous().view(-1);
  const int64_t n = flat.numel();
  auto stream = at::cuda::getCurrentCUDAStream();
  auto opts = scores.options();
  at::Tensor mask = at::empty(scores.sizes(), opts.dtype(at::kBool));
  at::Tensor state = at::zeros({(int64_t)sizeof(SelectState)}, opts.dtype(at::kByte));
  auto* st = reinterpret_cast<SelectState*>(state.data_ptr());
  if (n > 0) {
    at::Tensor keys = at::empty({n}, opts.dtype(at::kInt));
    auto* kp = reinterpret_cast<uint32_t*>(keys.data_ptr());
    const int sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
    const int grid = (int)std::min<int64_t>((n + kThreads - 1) / kThreads, (int64_t)sms * 8);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, flat.scalar_type(), "topk_mask_cuda", [&] {
      make_keys<scalar_t><<<grid, kThreads, 0, stream>>>(flat.data_ptr<scalar_t>(), kp, n, st);
    });
    init_state<<<1, 1, 0, stream>>>(st, n, k, k_dev);
    for (int shift = 24; shift >= 0; shift -= 8) {
      histogram<<<grid, kThreads, 0, stream>>>(kp, n, st, shift);
      choose_digit<<<1, 1, 0, stream>>>(st, shift);
    }
    const int64_t blocks = (n + kChunk - 1) / kChunk;
    at::Tensor ties = at::empty({blocks}, opts.dtype(at::kLong));
    at::Tensor offsets = at::empty({blocks}, opts.dtype(at::kLong));
    auto* tp = reinterpret_cast<long long*>(ties.data_ptr());
    auto* op = reinterpret_cast<long long*>(offsets.data_ptr());
    mark_above<<<blocks, kThreads, 0, stream>>>(kp, n, st, mask.data_ptr<bool>(), tp);
    size_t tmp_bytes = 0;
    cub::DeviceScan::ExclusiveSum(nullptr, tmp_bytes, tp, op, (int)blocks, stream);
    at::Tensor tmp = at::empty({(int64_t)tmp_bytes}, opts.dtype(at::kByte));
    cub::DeviceScan::ExclusiveSum(tmp.data_ptr(), tmp_bytes, tp, op, (int)blocks, stream);
    mark_ties<<<blocks, kThreads, 0, stream>>>(kp, n, st, mask.data_ptr<bool>(), op);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  // nan_count is the first field of the state: an int64 scalar, read in place (no copy to the host).
  at::Tensor nan_count = state.narrow(0, 0, 8).view(at::kLong).squeeze(0);
  return {mask, nan_count};
}

std::tuple<at::Tensor, at::Tensor> topk_mask_cuda(const at::Tensor& scores, int64_t k) {
  TORCH_CHECK(k >= 0, "topk_mask: k must be >= 0, got ", k);
  return topk_mask_launch(scores, k, nullptr);
}

std::tuple<at::Tensor, at::Tensor> topk_mask_k_tensor_cuda(const at::Tensor& scores, const at::Tensor& k) {
  TORCH_CHECK(k.numel() == 1 && k.scalar_type() == at::kLong && k.device() == scores.device(),
              "topk_mask: k must be one int64 on the scores' device, got ", k.sizes(), " ", k.scalar_type(), " on ",
              k.device());
  const auto kc = k.contiguous();
  return topk_mask_launch(scores, 0, kc.data_ptr<int64_t>());
}

}  // namespace

TORCH_LIBRARY_IMPL(rho, CUDA, m) {
  m.impl("topk_mask", &topk_mask_cuda);
  m.impl("topk_mask.k_tensor", &topk_mask_k_tensor_cuda);
}

}  // namespace rho
