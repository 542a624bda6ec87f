#include "data2vec/nn/layer_norm.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>

#include "data2vec/nn/vec_math.h"

namespace data2vec::nn {

namespace {

using vec::Float8;
using vec::kLanes;
using vec::lane_sum;
using vec::load8;

constexpr int64_t kGrain = 16384;  // elements per parallel chunk of the forward

struct CentredSums {
  float sum = 0.0f, squares = 0.0f;  // sum_j (x[j] - shift), sum_j (x[j] - shift)^2
};

// In four eight-float accumulators each: a row of 192 is 24 vectors, and one accumulator would
// make them one chain of dependent adds.
__attribute__((always_inline)) inline CentredSums centred_sums(const float* x, float shift,
                                                               int64_t n) {
  Float8 s0 = {}, s1 = {}, s2 = {}, s3 = {}, q0 = {}, q1 = {}, q2 = {}, q3 = {}, v0, v1, v2, v3;
  int64_t j = 0;
  for (; j + 4 * kLanes <= n; j += 4 * kLanes) {
    load8(v0, x + j);
    load8(v1, x + j + kLanes);
    load8(v2, x + j + 2 * kLanes);
    load8(v3, x + j + 3 * kLanes);
    v0 -= shift, v1 -= shift, v2 -= shift, v3 -= shift;
    s0 += v0, s1 += v1, s2 += v2, s3 += v3;
    q0 += v0 * v0, q1 += v1 * v1, q2 += v2 * v2, q3 += v3 * v3;
  }
  for (; j + kLanes <= n; j += kLanes) {
    load8(v0, x + j);
    v0 -= shift;
    s0 += v0, q0 += v0 * v0;
  }
  CentredSums out{lane_sum((s0 + s1) + (s2 + s3)), lane_sum((q0 + q1) + (q2 + q3))};
  for (; j < n; ++j) {
    const float d = x[j] - shift;
    out.sum += d, out.squares += d * d;
  }
  return out;
}

// One row: y = (x - mean) rstd w + b. The mean is the float `mean` plus a correction from a
// second pass, sum_j (x[j] - mean) / n, kept apart: x - mean is exact where x lies near the mean,
// so a small spread about a large mean (5 +- 1e-3) keeps its digits (the corrected two-pass
// algorithm; LibTorch's float kernel loses them to the mean's rounding). `mean` and rstd are
// kept for the backward, which forms the correction again.
DATA2VEC_VECTOR_CLONES
void layer_norm_row(const float* __restrict x, const float* __restrict w, const float* __restrict b,
                    float* __restrict y, float* mean_out, float* rstd_out, int64_t n, float eps) {
  const float mean = centred_sums(x, 0.0f, n).sum / float(n);
  const auto centred = centred_sums(x, mean, n);
  const float correction = centred.sum / float(n);
  const float variance = std::max(0.0f, centred.squares / float(n) - correction * correction);
  const float rstd = 1.0f / std::sqrt(variance + eps);
  for (int64_t j = 0; j < n; ++j) y[j] = ((x[j] - mean) - correction) * rstd * w[j] + b[j];
  *mean_out = mean;
  *rstd_out = rstd;
}

// One row of the backward. With xhat = (x - mean - correction) rstd and g = dy w:
// dx = rstd (g - mean_j(g) - xhat mean_j(g xhat)); dw += dy xhat and db += dy into `sums`
// ([dw | db], 2n floats). The first pass sums d = x - mean, g and g d; then
// sum_j g xhat = rstd (sum_j g d - correction sum_j g).
DATA2VEC_VECTOR_CLONES
void layer_norm_backward_row(const float* __restrict dy, const float* __restrict x,
                             const float* __restrict w, float mean, float rstd,
                             float* __restrict dx, float* __restrict sums, int64_t n) {
  Float8 d_lanes = {}, g_lanes = {}, gd_lanes = {}, gv, xv, wv;
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    load8(gv, dy + j);
    load8(xv, x + j);
    load8(wv, w + j);
    gv *= wv;
    xv -= mean;
    d_lanes += xv;
    g_lanes += gv;
    gd_lanes += gv * xv;
  }
  float d_sum = lane_sum(d_lanes), g_sum = lane_sum(g_lanes), gd_sum = lane_sum(gd_lanes);
  for (; j < n; ++j) {
    const float g = dy[j] * w[j], d = x[j] - mean;
    d_sum += d, g_sum += g, gd_sum += g * d;
  }
  const float correction = d_sum / float(n), g_mean = g_sum / float(n);
  const float gx_mean = rstd * (gd_sum - correction * g_sum) / float(n);
  // __restrict: without it GCC needs more run-time overlap checks than it will emit for this
  // loop, and leaves it scalar.
  float* __restrict dw = sums;
  float* __restrict db = sums + n;
  for (j = 0; j < n; ++j) {
    const float xhat = ((x[j] - mean) - correction) * rstd;
    dx[j] = rstd * (dy[j] * w[j] - g_mean - xhat * gx_mean);
    dw[j] += dy[j] * xhat;
    db[j] += dy[j];
  }
}

// Forward into y (same shape as x, contiguous); mean and rstd [rows].
void layer_norm_forward(const torch::Tensor& x, const torch::Tensor& weight,
                        const torch::Tensor& bias, double eps, torch::Tensor& y,
                        torch::Tensor& mean, torch::Tensor& rstd) {
  const auto cols = x.size(-1), rows = x.numel() / cols;
  y = torch::empty_like(x);
  mean = torch::empty({rows}, x.options());
  rstd = torch::empty({rows}, x.options());
  const float *xp = x.data_ptr<float>(), *wp = weight.data_ptr<float>(),
              *bp = bias.data_ptr<float>();
  float *yp = y.data_ptr<float>(), *mp = mean.data_ptr<float>(), *rp = rstd.data_ptr<float>();
  at::parallel_for(0, rows, std::max<int64_t>(1, kGrain / cols), [&](int64_t first, int64_t last) {
    for (int64_t r = first; r < last; ++r)
      layer_norm_row(xp + r * cols, wp, bp, yp + r * cols, mp + r, rp + r, cols, float(eps));
  });
}

class LayerNormFunction : public torch::autograd::Function<LayerNormFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& weight, const torch::Tensor& bias, double eps) {
    torch::Tensor y, mean, rstd;
    layer_norm_forward(x, weight, bias, eps, y, mean, rstd);
    ctx->save_for_backward({x, weight, mean, rstd});
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &weight = saved[1], &mean = saved[2], &rstd = saved[3];
    const auto dy = grads[0].contiguous();
    const auto cols = x.size(-1), rows = x.numel() / cols;
    auto dx = torch::empty_like(x);
    auto sums = torch::zeros({2, cols}, x.options());  // [dweight; dbias]
    const float *dyp = dy.data_ptr<float>(), *xp = x.data_ptr<float>(),
                *wp = weight.data_ptr<float>(), *mp = mean.data_ptr<float>(),
                *rp = rstd.data_ptr<float>();
    float* dxp = dx.data_ptr<float>();
    vec::sum_rows_in_chunks(rows, 2 * cols, sums.data_ptr<float>(),
                            [&](int64_t first, int64_t last, float* chunk_sums) {
                              for (int64_t r = first; r < last; ++r)
                                layer_norm_backward_row(dyp + r * cols, xp + r * cols, wp, mp[r],
                                                        rp[r], dxp + r * cols, chunk_sums, cols);
                            });
    return {ctx->needs_input_grad(0) ? dx : torch::Tensor(),
            ctx->needs_input_grad(1) ? sums[0] : torch::Tensor(),
            ctx->needs_input_grad(2) ? sums[1] : torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor layer_norm(const torch::Tensor& x, const torch::Tensor& weight,
                         const torch::Tensor& bias, double eps) {
  const auto fp32_cpu = [](const torch::Tensor& t) {
    return t.device().is_cpu() && t.scalar_type() == torch::kFloat32;
  };
  const auto fits = [&](const torch::Tensor& t) {  // an absent weight or bias fits
    return !t.defined() ||
           (fp32_cpu(t) && t.dim() == 1 && t.size(0) == x.size(-1) && t.is_contiguous());
  };
  const bool applies =
      x.defined() && fp32_cpu(x) && x.dim() >= 1 && x.numel() > 0 && fits(weight) && fits(bias);
  if (!applies) return torch::layer_norm(x, {x.size(-1)}, weight, bias, eps);
  const auto input = x.contiguous();
  // No weight: ones; no bias: zeros ([D], next to the [rows, D] pass; no gradient asked of them).
  const auto w = weight.defined() ? weight : torch::ones({x.size(-1)}, x.options());
  const auto b = bias.defined() ? bias : torch::zeros({x.size(-1)}, x.options());
  if (!torch::GradMode::is_enabled() ||
      !(input.requires_grad() || w.requires_grad() || b.requires_grad())) {
    torch::Tensor y, mean, rstd;
    layer_norm_forward(input, w, b, eps, y, mean, rstd);
    return y;
  }
  return LayerNormFunction::apply(input, w, b, eps);
}

torch::Tensor layer_norm(const torch::Tensor& x, const torch::nn::LayerNorm& norm) {
  const auto& o = norm->options;
  TORCH_CHECK(o.normalized_shape().size() == 1 && o.normalized_shape()[0] == x.size(-1),
              "layer_norm: expected a LayerNorm over the last dimension (", x.size(-1),
              "), got normalized_shape ", o.normalized_shape());
  return layer_norm(x, norm->weight, norm->bias, o.eps());
}

}  // namespace data2vec::nn
