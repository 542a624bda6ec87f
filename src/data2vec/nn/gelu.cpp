#include "data2vec/nn/gelu.h"

#include <ATen/Parallel.h>

#include "data2vec/nn/vec_math.h"

namespace data2vec::nn {

namespace {

constexpr int64_t kGrain = 16384;  // elements per parallel chunk
constexpr float kSqrtHalf = 0.70710678118654752f;
constexpr float kInvSqrt2Pi = 0.39894228040143268f;

DATA2VEC_VECTOR_CLONES
void gelu_forward(const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = 0.5f * x[i] * (1.0f + vec::erf(x[i] * kSqrtHalf));
}

// dy/dx = Phi(x) + x phi(x), with Phi(x) = (1 + erf(x / sqrt 2)) / 2, phi the normal density.
DATA2VEC_VECTOR_CLONES
void gelu_backward(const float* x, const float* dy, float* dx, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float cdf = 0.5f * (1.0f + vec::erf(x[i] * kSqrtHalf));
    const float pdf = kInvSqrt2Pi * vec::exp(-0.5f * x[i] * x[i]);
    dx[i] = dy[i] * (cdf + x[i] * pdf);
  }
}

// One row of gelu_backward_from_output: dx = dy (y / x + x phi(x)), and dx added into sums.
DATA2VEC_WIDE_VECTOR_CLONES
void gelu_backward_from_output_row(const float* x, const float* y, const float* dy, float* dx,
                                   float* sums, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float cdf = x[i] != 0.0f ? y[i] / x[i] : 0.5f;
    const float pdf = kInvSqrt2Pi * vec::exp(-0.5f * x[i] * x[i]);
    dx[i] = dy[i] * (cdf + x[i] * pdf);
    sums[i] += dx[i];
  }
}

class GeluErfFunction : public torch::autograd::Function<GeluErfFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x_in) {
    const auto x = x_in.contiguous();
    auto y = torch::empty_like(x);
    const float* xp = x.data_ptr<float>();
    float* yp = y.data_ptr<float>();
    at::parallel_for(0, x.numel(), kGrain, [&](int64_t begin, int64_t end) {
      gelu_forward(xp + begin, yp + begin, end - begin);
    });
    ctx->save_for_backward({x});
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto x = ctx->get_saved_variables()[0];
    const auto dy = grads[0].contiguous();
    auto dx = torch::empty_like(x);
    const float *xp = x.data_ptr<float>(), *dyp = dy.data_ptr<float>();
    float* dxp = dx.data_ptr<float>();
    at::parallel_for(0, x.numel(), kGrain, [&](int64_t begin, int64_t end) {
      gelu_backward(xp + begin, dyp + begin, dxp + begin, end - begin);
    });
    return {dx};
  }
};

class ContiguousGeluFunction : public torch::autograd::Function<ContiguousGeluFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x) {
    ctx->save_for_backward({x});
    return torch::gelu(x);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto x = ctx->get_saved_variables()[0];
    return {torch::gelu_backward(grads[0].contiguous(), x.contiguous()).view_as(x)};
  }
};

}  // namespace

torch::Tensor gelu(const torch::Tensor& x) {
  return ContiguousGeluFunction::apply(x);
}

GeluGradient gelu_backward_from_output(const torch::Tensor& dy, const torch::Tensor& x,
                                       const torch::Tensor& y) {
  TORCH_CHECK(x.dim() == 2 && x.sizes() == y.sizes() && x.sizes() == dy.sizes() &&
                  x.is_contiguous() && y.is_contiguous() && dy.is_contiguous() &&
                  x.scalar_type() == torch::kFloat32 && y.scalar_type() == torch::kFloat32 &&
                  dy.scalar_type() == torch::kFloat32 && x.device().is_cpu(),
              "gelu_backward_from_output: expected contiguous CPU fp32 [rows, cols] tensors of one "
              "shape, got ", dy.sizes(), ", ", x.sizes(), ", ", y.sizes());
  const auto rows = x.size(0), cols = x.size(1);
  GeluGradient grad{torch::empty_like(x), torch::zeros({cols}, x.options())};
  const float *xp = x.data_ptr<float>(), *yp = y.data_ptr<float>(), *dyp = dy.data_ptr<float>();
  float* dxp = grad.input.data_ptr<float>();
  vec::sum_rows_in_chunks(rows, cols, grad.column_sums.data_ptr<float>(),
                          [&](int64_t first, int64_t last, float* sums) {
                            for (int64_t r = first; r < last; ++r) {
                              const int64_t o = r * cols;
                              gelu_backward_from_output_row(xp + o, yp + o, dyp + o, dxp + o, sums,
                                                            cols);
                            }
                          });
  return grad;
}

torch::Tensor gelu_erf(const torch::Tensor& x) {
  if (!x.device().is_cpu() || x.scalar_type() != torch::kFloat32) return nn::gelu(x);
  return GeluErfFunction::apply(x);
}

}  // namespace data2vec::nn
