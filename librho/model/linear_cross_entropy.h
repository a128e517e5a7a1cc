#pragma once
// Per-token cross-entropy of a linear layer's output (the LM head) without ever holding the full logits:
// linear_cross_entropy(hidden, weight, targets) == cross_entropy(hidden @ weight.T, targets, reduction none),
// computed `rows_per_chunk` rows at a time in the forward and again in the backward. Autograd keeps only
// hidden, weight, targets and one fp32 log-sum-exp per row, instead of every chunk's fp32 log-softmax.
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace rho {

// hidden [N, H] (any float dtype), weight [V, H], targets [N] int64 -> losses [N] fp32 (fp64 for fp64
// inputs). Targets equal to ignore_index get loss 0 and no gradient. fp32/fp64 inputs get exactly the numbers
// of linear -> cross_entropy under autograd, chunk by chunk. Under CUDA autocast the matmuls and the backward's
// softmax run in the autocast dtype, the log-sum-exp, the losses and the weight's gradient (summed over chunks)
// in fp32.
at::Tensor linear_cross_entropy(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& targets,
                                int64_t rows_per_chunk = 4096, int64_t ignore_index = -100);

}  // namespace rho
