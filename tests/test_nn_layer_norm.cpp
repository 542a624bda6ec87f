// nn::layer_norm against torch::layer_norm computed in double precision: outputs and the
// gradients of input, weight and bias, at widths that exercise the kernels' four-vector, one-vector
// and scalar loops; the weight and bias gradients the same for one thread and two; the fallback
// for other dtypes and strided inputs.
#include <ATen/Parallel.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <array>
#include <utility>

#include "data2vec/nn/layer_norm.h"
#include "support.h"

namespace data2vec::nn {
namespace {

using data2vec::testing::tensors_close;

struct Grads {
  torch::Tensor y, dx, dw, db;
};

Grads run(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b,
          const torch::Tensor& dy, double eps, bool reference) {
  auto xr = x.detach().clone().requires_grad_(true), wr = w.detach().clone().requires_grad_(true),
       br = b.detach().clone().requires_grad_(true);
  auto y =
      reference ? torch::layer_norm(xr, {x.size(-1)}, wr, br, eps) : layer_norm(xr, wr, br, eps);
  y.backward(dy);
  return {y.detach(), xr.grad(), wr.grad(), br.grad()};
}

double max_error(const torch::Tensor& actual, const torch::Tensor& expected) {
  return (actual.to(torch::kFloat64) - expected).abs().max().item<double>();
}

// Every output and gradient is as close to the double-precision result as LibTorch's own fp32
// kernel is (within 2x, or a few fp32 roundings of the value's size). The rows have an offset (a
// mean far from 0: the variance in two passes) and one has a small variance, where both lose
// digits in x - mean (the mean's rounding, relative to the spread).
TEST(LayerNorm, AsCloseToDoublePrecisionAsLibTorchInOutputAndEveryGradient) {
  torch::manual_seed(3);
  for (const int64_t width : {1, 7, 8, 37, 192, 200, 768}) {
    SCOPED_TRACE("width " + std::to_string(width));
    auto x = torch::randn({3, 11, width}) * 3.0 + 5.0;
    x[1][2] = 5.0 + 1e-3 * torch::randn({width});
    const auto w = torch::randn({width}), b = torch::randn({width});
    const auto dy = torch::randn({3, 11, width});
    const double eps = 1e-6;
    const auto ours = run(x, w, b, dy, eps, false);
    const auto libtorch = run(x, w, b, dy, eps, true);
    const auto ref = run(x.to(torch::kFloat64), w.to(torch::kFloat64), b.to(torch::kFloat64),
                         dy.to(torch::kFloat64), eps, true);
    EXPECT_EQ(ours.y.scalar_type(), torch::kFloat32);
    const std::pair<const char*, std::array<torch::Tensor, 3>> outputs[] = {
        {"output", {ours.y, libtorch.y, ref.y}},
        {"input gradient", {ours.dx, libtorch.dx, ref.dx}},
        {"weight gradient", {ours.dw, libtorch.dw, ref.dw}},
        {"bias gradient", {ours.db, libtorch.db, ref.db}}};
    for (const auto& [name, t] : outputs) {
      const double ulps = 8 * 6e-8 * t[2].abs().max().item<double>();
      EXPECT_LE(max_error(t[0], t[2]), 2 * max_error(t[1], t[2]) + ulps) << name;
    }
  }
}

TEST(LayerNorm, TheModuleOverloadUsesItsParametersAndEpsilon) {
  torch::manual_seed(4);
  torch::nn::LayerNorm norm(torch::nn::LayerNormOptions({24}).eps(0.5));
  norm->weight.data().uniform_(0.5, 2.0);
  norm->bias.data().uniform_(-1.0, 1.0);
  const auto x = torch::randn({4, 24});
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(tensors_close("module output", layer_norm(x, norm), norm(x), 1e-6));
  torch::nn::LayerNorm without_affine(torch::nn::LayerNormOptions({24}).elementwise_affine(false));
  EXPECT_TRUE(
      tensors_close("no weight, no bias", layer_norm(x, without_affine), without_affine(x), 1e-6));
  torch::nn::LayerNorm over_two_dims(torch::nn::LayerNormOptions({4, 24}));
  EXPECT_THROW(layer_norm(x, over_two_dims), c10::Error);
  torch::nn::LayerNorm other_width(torch::nn::LayerNormOptions({12}).elementwise_affine(false));
  EXPECT_THROW(layer_norm(x, other_width), c10::Error);
}

// Without weight or bias (the targets' norm): the input gradient as LibTorch's.
TEST(LayerNorm, WithoutWeightOrBias) {
  torch::manual_seed(7);
  const auto x = torch::randn({6, 40}) + 2.0, dy = torch::randn({6, 40});
  for (const bool weight : {false, true}) {
    const auto w = weight ? torch::randn({40}) : torch::Tensor();
    auto xo = x.clone().requires_grad_(true), xr = x.clone().requires_grad_(true);
    const auto yo = layer_norm(xo, w, {}, 1e-5);
    const auto yr = torch::layer_norm(xr, {40}, w, {}, 1e-5);
    EXPECT_NE(yo.grad_fn()->name().find("LayerNormFunction"), std::string::npos);
    yo.backward(dy);
    yr.backward(dy);
    EXPECT_TRUE(tensors_close("output", yo, yr, 1e-5));
    EXPECT_TRUE(tensors_close("input gradient", xo.grad(), xr.grad(), 1e-5));
  }
}

// The weight and bias gradients are summed over rows in fixed chunks, then in chunk order: the
// same bits whatever the thread count. Many rows, so that the chunks split between threads.
TEST(LayerNorm, GradientsAreTheSameForOneThreadAndTwo) {
  torch::manual_seed(5);
  const auto x = torch::randn({1000, 96}), w = torch::randn({96}), b = torch::randn({96});
  const auto dy = torch::randn({1000, 96});
  const int threads = at::get_num_threads();
  at::set_num_threads(1);
  const auto one = run(x, w, b, dy, 1e-5, false);
  at::set_num_threads(2);
  const auto two = run(x, w, b, dy, 1e-5, false);
  at::set_num_threads(threads);
  EXPECT_TRUE(torch::equal(one.y, two.y));
  EXPECT_TRUE(torch::equal(one.dx, two.dx));
  EXPECT_TRUE(torch::equal(one.dw, two.dw));
  EXPECT_TRUE(torch::equal(one.db, two.db));
}

// A transposed (strided) input, a bf16 input (LibTorch's kernel), and a graph without our node
// where nothing needs a gradient.
TEST(LayerNorm, StridedAndOtherDtypeInputsAndNoGradient) {
  torch::manual_seed(6);
  const auto w = torch::randn({16}), b = torch::randn({16});
  const auto x = torch::randn({16, 5}).t();  // [5,16], not contiguous
  const auto expected = torch::layer_norm(x, {16}, w, b, 1e-5);
  EXPECT_TRUE(tensors_close("strided", layer_norm(x, w, b, 1e-5), expected, 1e-5));
  const auto bf16 =
      layer_norm(x.to(torch::kBFloat16), w.to(torch::kBFloat16), b.to(torch::kBFloat16), 1e-5);
  EXPECT_EQ(bf16.scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(tensors_close("bf16", bf16.to(torch::kFloat32), expected, 0.1));
  const auto y = layer_norm(x, w, b, 1e-5);
  EXPECT_FALSE(y.requires_grad());
  EXPECT_FALSE(y.grad_fn());
  const auto yg = layer_norm(x, w.clone().requires_grad_(true), b, 1e-5);
  ASSERT_TRUE(yg.grad_fn());
  EXPECT_NE(yg.grad_fn()->name().find("LayerNormFunction"), std::string::npos)
      << yg.grad_fn()->name();
}

}  // namespace
}  // namespace data2vec::nn
