// rho::topk_mask: operator schema, dispatch wrapper and the CPU kernel (a 4-pass 8-bit radix select that
// mirrors the CUDA kernel step by step, so the two select the same elements).
#include "librho/kernels/topk_mask.h"
#include "librho/kernels/topk_key.h"

#include <ATen/Dispatch.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/scalar_tensor.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <vector>

namespace rho {
namespace {

std::vector<uint32_t> keys_of(const at::Tensor& scores) {
  const auto flat = scores.contiguous().view(-1);
  std::vector<uint32_t> keys(flat.numel());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, flat.scalar_type(), "topk_mask_cpu", [&] {
    const scalar_t* p = flat.data_ptr<scalar_t>();
    for (int64_t i = 0; i < flat.numel(); ++i) keys[i] = kernels::topk_key(static_cast<float>(p[i]));
  });
  return keys;
}

std::tuple<at::Tensor, at::Tensor> topk_mask_cpu(const at::Tensor& scores, int64_t k) {
  TORCH_CHECK(k >= 0, "topk_mask: k must be >= 0, got ", k);
  const auto keys = keys_of(scores);
  const int64_t n = static_cast<int64_t>(keys.size());
  int64_t nan_count = 0;
  for (uint32_t key : keys) nan_count += key == 0;
  int64_t remaining = std::min(k, n - nan_count);  // how many still to take at or below the current prefix

  at::Tensor mask = at::empty(scores.sizes(), scores.options().dtype(at::kBool));
  bool* m = mask.data_ptr<bool>();
  std::fill(m, m + n, false);
  if (remaining > 0) {
    // Radix select, most significant byte first: find threshold T with count(key > T) < k <= count(key >= T).
    uint32_t prefix = 0, prefix_mask = 0;
    for (int shift = 24; shift >= 0; shift -= 8) {
      std::array<int64_t, 256> hist{};
      for (uint32_t key : keys)
        if ((key & prefix_mask) == prefix) ++hist[(key >> shift) & 0xff];
      int digit = 255;
      for (; digit > 0 && hist[digit] < remaining; --digit) remaining -= hist[digit];
      prefix |= static_cast<uint32_t>(digit) << shift;
      prefix_mask |= 0xffu << shift;
    }
    // Keys above T are all kept; `remaining` ties at T are kept in index order.
    for (int64_t i = 0; i < n; ++i) {
      if (keys[i] > prefix) {
        m[i] = true;
      } else if (keys[i] == prefix && remaining > 0) {
        m[i] = true;
        --remaining;
      }
    }
  }
  return {mask, at::scalar_tensor(nan_count, scores.options().dtype(at::kLong))};
}

std::tuple<at::Tensor, at::Tensor> topk_mask_k_tensor_cpu(const at::Tensor& scores, const at::Tensor& k) {
  TORCH_CHECK(k.numel() == 1 && k.scalar_type() == at::kLong, "topk_mask: k must be one int64, got ", k.sizes(), " ",
              k.scalar_type());
  // A CPU tensor, read in place; a negative k selects nothing (as on CUDA, where k is never seen by the host).
  return topk_mask_cpu(scores, std::max<int64_t>(0, *k.contiguous().data_ptr<int64_t>()));
}

}  // namespace

TORCH_LIBRARY(rho, m) {
  m.def("topk_mask(Tensor scores, int k) -> (Tensor mask, Tensor nan_count)");
  m.def("topk_mask.k_tensor(Tensor scores, Tensor k) -> (Tensor mask, Tensor nan_count)");
}

TORCH_LIBRARY_IMPL(rho, CPU, m) {
  m.impl("topk_mask", &topk_mask_cpu);
  m.impl("topk_mask.k_tensor", &topk_mask_k_tensor_cpu);
}

std::pair<at::Tensor, at::Tensor> topk_mask(const at::Tensor& scores, int64_t k) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("rho::topk_mask", "")
                       .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, int64_t)>();
  auto [mask, nans] = op.call(scores, k);
  return {mask, nans};
}

std::pair<at::Tensor, at::Tensor> topk_mask(const at::Tensor& scores, const at::Tensor& k) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("rho::topk_mask", "k_tensor")
                       .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&)>();
  auto [mask, nans] = op.call(scores, k);
  return {mask, nans};
}

}  // namespace rho
