#pragma once
// fused_sum: the in-order sum ((p0 + p1) + p2) + p3 of 2 to 4 tensors of one shape, dtype and device, each
// converted to fp32 before it is added, in one pass (a TensorIterator kernel reading each part once and writing the
// sum once). The same values, bit for bit, as converting the first and adding the others to it in place, which
// takes one pass per part over the fp32 sum. rho::sum_as (librho/model/lean_ops.h) uses it on CUDA; on the CPU
// the same TensorIterator runs ATen's CPU loop, the CUDA kernel's tested twin.
#include <ATen/core/Tensor.h>

#include <vector>

namespace rho {

// Whether fused_sum takes these parts: 2 to 4, all defined, of one shape, dtype (fp32, bf16 or fp16) and device
// (the CPU, or CUDA where librho was built with its CUDA kernels). It makes no autograd node.
bool fused_sum_supports(const std::vector<at::Tensor>& parts);

// A new fp32 tensor of the parts' shape (the first part's layout where it is dense). Throws where
// fused_sum_supports is false.
at::Tensor fused_sum(const std::vector<at::Tensor>& parts);

}  // namespace rho
