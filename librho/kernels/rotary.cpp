// rho::rotary: the checks, the operands' geometry, and the CPU loop (the CUDA kernel is rotary.cu).
#include "librho/kernels/rotary.h"
#include "librho/kernels/operands.h"
#include "librho/kernels/rotary_pair.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty_like.h>
#include <ATen/record_function.h>

#include <algorithm>

namespace rho {

#ifdef RHO_WITH_CUDA
namespace kernels {
void rotary_cuda(const RotaryGeometry& g, const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin_signed,
                 const at::Tensor& out, bool transpose);  // rotary.cu
}  // namespace kernels
#endif

namespace {
bool rotary_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kBFloat16 || t == at::kHalf;
}

bool rotary_table_broadcasts(const at::Tensor& table, const at::Tensor& x) {
  if (table.dim() > x.dim() || table.dim() == 0 || table.size(-1) != x.size(-1)) return false;
  for (int64_t i = 1; i <= table.dim(); ++i) {
    const int64_t t = table.size(-i);
    if (t != 1 && t != x.size(-i)) return false;
  }
  return true;
}

void rotary_cpu(const kernels::RotaryGeometry& g, const at::Tensor& x, const at::Tensor& cos,
                const at::Tensor& sin_signed, const at::Tensor& out, bool transpose) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "rotary_cpu", [&] {
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* cp = cos.const_data_ptr<scalar_t>();
    const scalar_t* sp = sin_signed.const_data_ptr<scalar_t>();
    scalar_t* op = out.mutable_data_ptr<scalar_t>();
    const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, g.half));  // rows
    // The index type the CUDA kernel picks for the same geometry, so that the twin runs the same arithmetic.
    const auto rows = [&](auto index) {
      using I = decltype(index);
      at::parallel_for(0, g.rows, grain, [&](int64_t begin, int64_t end) {
        I offset[4];
        for (I row = static_cast<I>(begin); row < static_cast<I>(end); ++row) {
          kernels::rotary_row_offsets<I>(g, row, offset);
          for (I j = 0; j < static_cast<I>(g.half); ++j)
            kernels::rotary_pair<scalar_t, I>(g, offset, j, xp, cp, sp, op, transpose);
        }
      });
    };
    if (g.fits_int32)
      rows(int32_t{0});
    else
      rows(int64_t{0});
  });
}
}  // namespace

namespace kernels {
RotaryGeometry rotary_geometry(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin_signed,
                               const at::Tensor& out) {
  RotaryGeometry g;
  g.dims = static_cast<int>(x.dim()) - 1;
  g.half = x.size(-1) / 2;
  g.rows = 1;
  const at::Tensor operands[4] = {x, cos.expand(x.sizes()), sin_signed.expand(x.sizes()), out};
  for (int d = 0; d < g.dims; ++d) {
    g.size[d] = x.size(d);
    g.rows *= x.size(d);
    for (int o = 0; o < 4; ++o) g.stride[o][d] = operands[o].stride(d);
  }
  for (int o = 0; o < 4; ++o) g.last_stride[o] = operands[o].stride(-1);
  constexpr int64_t kLimit = int64_t{1} << 30;  // room for a grid-stride step past the last pair
  g.fits_int32 = g.rows * g.half < kLimit;
  for (int o = 0; o < 4; ++o) {  // the largest offset (strides are never negative)
    int64_t last = (x.size(-1) - 1) * g.last_stride[o];
    for (int d = 0; d < g.dims; ++d) last += (g.size[d] - 1) * g.stride[o][d];
    g.fits_int32 = g.fits_int32 && last < kLimit;
  }
  return g;
}
}  // namespace kernels

bool rotary_supports(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin_signed) {
  for (const auto* t : {&x, &cos, &sin_signed})
    if (!kernels::plain_operand(*t)) return false;
  if (x.dim() < 1 || x.dim() > kernels::kRotaryMaxDims + 1 || x.size(-1) == 0 || x.size(-1) % 2 != 0) return false;
  if (!rotary_dtype(x.scalar_type()) || cos.scalar_type() != x.scalar_type() ||
      sin_signed.scalar_type() != x.scalar_type())
    return false;
  if (cos.device() != x.device() || sin_signed.device() != x.device()) return false;
  return rotary_table_broadcasts(cos, x) && rotary_table_broadcasts(sin_signed, x) &&
         kernels::kernels_run_on(x.device());
}

at::Tensor rotary(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin_signed, bool transpose) {
  TORCH_CHECK(rotary_supports(x, cos, sin_signed), "rotary: unsupported operands: x ", x.sizes(), " ",
              x.scalar_type(), " on ", x.device(), ", cos ", cos.sizes(), " ", cos.scalar_type(), ", sin ",
              sin_signed.sizes(), " ", sin_signed.scalar_type());
  RECORD_FUNCTION("rho::rotary", std::vector<c10::IValue>{});  // names its kernel in profiles
  at::Tensor out = at::empty_like(x);  // x's layout where x is dense (a transposed view stays one)
  if (out.numel() == 0) return out;
  const auto g = kernels::rotary_geometry(x, cos, sin_signed, out);
#ifdef RHO_WITH_CUDA
  if (x.is_cuda()) {
    kernels::rotary_cuda(g, x, cos, sin_signed, out, transpose);
    return out;
  }
#endif
  rotary_cpu(g, x, cos, sin_signed, out, transpose);
  return out;
}

}  // namespace rho
