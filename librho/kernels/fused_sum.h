#pragma once
// fused_sum: the in-order sum (p0 + p1) + p2 of 2 or 3 tensors of one dense layout, dtype and device, each
// converted to fp32 before it is added, in one pass (reading each part once and writing the sum once). The same
// values, bit for bit, as converting the first and adding the others to it in place, which takes one pass per part
// over the fp32 sum. rho::sum_as (librho/model/lean_ops.h) uses it on CUDA; the CPU loop, with the same arithmetic
// (fused_sum_math.h), is the CUDA kernel's tested twin.
#include <ATen/core/Tensor.h>

#include <vector>

namespace rho {

// Whether fused_sum takes these parts: 2 or 3, all defined, dense, of one shape and strides, one dtype (fp32, bf16
// or fp16) and one device (the CPU, or CUDA where librho was built with its CUDA kernels). It makes no autograd
// node.
bool fused_sum_supports(const std::vector<at::Tensor>& parts);

// A new fp32 tensor of the parts' shape and layout. Throws where
// fused_sum_supports is false.
at::Tensor fused_sum(const std::vector<at::Tensor>& parts);

}  // namespace rho
