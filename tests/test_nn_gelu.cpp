// nn::gelu_erf and the polynomial erf under it against std::erf: the erf over every finite
// float range, GELU's value and derivative against double precision
// on a dense grid, the autograd function against torch::gelu, and the derivative formed from the
// forward's output (the fused linear + GELU's backward) against double precision.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <ATen/Parallel.h>

#include <cmath>
#include <cstring>

#include "data2vec/nn/gelu.h"
#include "data2vec/nn/vec_math.h"
#include "support.h"

namespace data2vec::nn {
namespace {

using data2vec::testing::tensors_close;

// erf is odd and the approximation is odd by construction (sign restored at the end): the
// positive floats are checked: every 256th bit pattern from 0 to infinity, every 4th in [1/2, 1)
// (where the error is largest: the seam of the two pieces at 0.75) and every 16th in [1/4, 4).
TEST(Gelu, PolynomialErfIsWithinFp32RoundingOverTheFloatRange) {
  struct Range {
    uint32_t first, last, step;
  };
  auto bits_of = [](float x) {
    uint32_t b;
    std::memcpy(&b, &x, sizeof b);
    return b;
  };
  const Range ranges[] = {{0, bits_of(INFINITY), 256},
                          {bits_of(0.5f), bits_of(1.0f), 4},
                          {bits_of(0.25f), bits_of(4.0f), 16}};
  double max_err = 0.0;
  float at = 0.0f;
  for (const auto& r : ranges) {
    const int64_t chunks = 64, n = int64_t(r.last - r.first) / r.step;
    std::vector<double> worst(size_t(chunks), 0.0);
    std::vector<float> worst_x(size_t(chunks), 0.0f);
    at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c) {
        for (int64_t k = c * n / chunks; k < (c + 1) * n / chunks; ++k) {
          const uint32_t bits = r.first + uint32_t(k) * r.step;
          float x;
          std::memcpy(&x, &bits, sizeof x);
          const double err = std::abs(double(vec::erf(x)) - std::erf(double(x)));
          if (err > worst[size_t(c)]) worst[size_t(c)] = err, worst_x[size_t(c)] = x;
          const double odd = std::abs(double(vec::erf(-x)) + double(vec::erf(x)));
          if (odd > worst[size_t(c)]) worst[size_t(c)] = odd, worst_x[size_t(c)] = -x;
        }
      }
    });
    for (int64_t c = 0; c < chunks; ++c)
      if (worst[size_t(c)] > max_err) max_err = worst[size_t(c)], at = worst_x[size_t(c)];
  }
  EXPECT_EQ(vec::erf(INFINITY), 1.0f);
  EXPECT_EQ(vec::erf(-INFINITY), -1.0f);
  // fp32's rounding step is 2^-24 just below 1: the error stays below 2 of them.
  EXPECT_LT(max_err, std::ldexp(1.0, -23)) << "worst at x = " << at;
  std::printf("polynomial erf: max abs error %.3g (at x = %.6g)\n", max_err, double(at));
}

TEST(Gelu, ValueAndDerivativeMatchDoublePrecision) {
  const auto x = torch::linspace(-12.0, 12.0, 480001, torch::kFloat64);
  const auto erf = torch::erf(x / std::sqrt(2.0));
  const auto value = 0.5 * x * (1 + erf);
  const auto slope = 0.5 * (1 + erf) + x * torch::exp(-0.5 * x * x) / std::sqrt(2 * M_PI);
  auto xf = x.to(torch::kFloat32).requires_grad_(true);
  const auto y = gelu_erf(xf);
  y.sum().backward();
  // Relative to max(1, |x|): the fp32 result's own rounding.
  const auto scale = x.abs().clamp_min(1.0);
  EXPECT_LT(((y.to(torch::kFloat64) - value).abs() / scale).max().item<double>(), 3e-7);
  EXPECT_LT(((xf.grad().to(torch::kFloat64) - slope).abs() / scale).max().item<double>(), 5e-7);
}

TEST(Gelu, AgreesWithTorchGeluForwardAndBackward) {
  torch::manual_seed(0);
  const auto x = torch::randn({3, 37, 129}) * 3;
  auto a = x.clone().requires_grad_(true), b = x.clone().requires_grad_(true);
  const auto ya = gelu_erf(a), yb = torch::gelu(b);
  // 2e-6: torch::gelu's own error. LibTorch 2.6's vectorised erf is up to ~1e-6 off here where
  // 1.13's was within fp32 rounding; ValueAndDerivativeMatchDoublePrecision holds ours to 3e-7.
  EXPECT_TRUE(tensors_close("gelu", ya, yb, 2e-6));
  const auto g = torch::randn_like(ya);
  (ya * g).sum().backward();
  (yb * g).sum().backward();
  EXPECT_TRUE(tensors_close("gelu gradient", a.grad(), b.grad(), 2e-6));
  // Non-contiguous input, and a dtype the polynomial does not take (falls back to torch::gelu).
  EXPECT_TRUE(tensors_close("strided", gelu_erf(x.transpose(0, 2)), torch::gelu(x.transpose(0, 2)), 2e-6));
  EXPECT_TRUE(tensors_close("fp64", gelu_erf(x.to(torch::kFloat64)), torch::gelu(x.to(torch::kFloat64)), 0.0));
}

// The gradient reaching a GELU through movedim / transpose is strided unlike the GELU's input
// (the 2.0 decoder block: gelu(y).movedim(-1, 1)). LibTorch 1.13's CPU fp32 gelu_backward
// gets such a pair wrong (garbage up to 1e38, run to run different); nn::gelu and gelu_erf
// must give the fp64 gradient for every layout pair.
TEST(Gelu, GradientIsRightWhateverTheLayoutOfTheIncomingGradient) {
  torch::manual_seed(0);
  const auto x = torch::randn({3, 9, 32}) * 2;  // [R,T,D]: contiguous, as layer_norm returns it
  const auto upstream = torch::randn({3, 32, 9});
  const auto expected_of = [&](const torch::Tensor& x64) {
    auto leaf = x64.clone().requires_grad_(true);
    (torch::gelu(leaf).movedim(-1, 1) * upstream.to(torch::kFloat64)).sum().backward();
    return leaf.grad();
  };
  for (const bool strided_input : {false, true}) {
    // The strided input case: the same values laid out [R,D,T] and viewed as [R,T,D].
    const auto input = strided_input ? x.transpose(1, 2).contiguous().transpose(1, 2) : x;
    const auto expected = expected_of(input.to(torch::kFloat64));
    for (const auto& [name, fn] :
         std::vector<std::pair<std::string, torch::Tensor (*)(const torch::Tensor&)>>{
             {"nn::gelu", &nn::gelu}, {"nn::gelu_erf", &nn::gelu_erf}}) {
      for (int repeat = 0; repeat < 3; ++repeat) {
        auto leaf = input.detach().clone(torch::MemoryFormat::Preserve).requires_grad_(true);
        (fn(leaf).movedim(-1, 1) * upstream).sum().backward();
        EXPECT_TRUE(tensors_close(name + (strided_input ? " strided input" : "") + " gradient",
                                  leaf.grad().to(torch::kFloat64), expected, 1e-5));
      }
    }
  }
}

// The derivative from the forward's output (Phi(x) = gelu(x) / x) against the fp64 derivative on
// a grid over [-12, 12] that holds 0, denormals and values whose GELU underflows, with y from
// torch::gelu as the fused linear hands it over; the column sums against a sum in double.
TEST(Gelu, BackwardFromOutputMatchesDoublePrecisionAndSumsColumns) {
  const int64_t rows = 157, cols = 301;  // odd: chunk and vector tails
  auto x64 = torch::linspace(-12.0, 12.0, rows * cols, torch::kFloat64).view({rows, cols});
  x64[0][0] = 0.0;
  x64[0][1] = 1e-39;  // a denormal float
  x64[0][2] = -1e-39;
  const auto x = x64.to(torch::kFloat32);
  const auto y = torch::gelu(x);
  torch::manual_seed(4);
  const auto dy = torch::randn({rows, cols});
  const auto grad = gelu_backward_from_output(dy, x, y);
  const auto xd = x.to(torch::kFloat64);
  const auto slope = 0.5 * (1 + torch::erf(xd / std::sqrt(2.0))) +
                     xd * torch::exp(-0.5 * xd * xd) / std::sqrt(2 * M_PI);
  const auto expected = dy.to(torch::kFloat64) * slope;
  // torch::gelu's erf is within 1.5e-7 of the true one; Phi = y / x adds its rounding.
  EXPECT_LT((grad.input.to(torch::kFloat64) - expected).abs().max().item<double>(), 1e-6);
  EXPECT_TRUE(torch::isfinite(grad.input).all().item<bool>());
  EXPECT_NEAR(grad.input[0][0].item<float>(), 0.5f * dy[0][0].item<float>(), 1e-7);
  ASSERT_EQ(grad.column_sums.sizes(), torch::IntArrayRef({cols}));
  EXPECT_TRUE(tensors_close("column sums", grad.column_sums.to(torch::kFloat64),
                            grad.input.to(torch::kFloat64).sum(0), 1e-5));
  // The same bits whatever the thread count: fixed row chunks, summed in chunk order.
  const int threads = at::get_num_threads();
  at::set_num_threads(1);
  const auto one = gelu_backward_from_output(dy, x, y);
  at::set_num_threads(threads);
  EXPECT_TRUE(torch::equal(one.input, grad.input));
  EXPECT_TRUE(torch::equal(one.column_sums, grad.column_sums));
}

TEST(Gelu, BackwardFromOutputRejectsWhatItDoesNotTake) {
  const auto x = torch::randn({4, 6});
  EXPECT_THROW(gelu_backward_from_output(x, x, torch::randn({4, 5})), c10::Error);
  EXPECT_THROW(gelu_backward_from_output(x.t(), x.t(), x.t()), c10::Error);
  const auto d = x.to(torch::kFloat64);
  EXPECT_THROW(gelu_backward_from_output(d, d, d), c10::Error);
}

TEST(Gelu, ContiguousGeluIsTorchGeluForward) {
  const auto x = torch::randn({4, 5, 6});
  EXPECT_TRUE(torch::equal(nn::gelu(x), torch::gelu(x)));
  EXPECT_TRUE(torch::equal(nn::gelu(x.transpose(0, 2)), torch::gelu(x.transpose(0, 2))));
}

}  // namespace
}  // namespace data2vec::nn
