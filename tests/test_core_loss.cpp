// The regression loss (arXiv 2202.03555, sec. 3) and the spread statistic (arXiv 2202.03555, sec. 3) against hand computations.
#include <cmath>

#include "data2vec/core/loss.h"
#include "support.h"

namespace data2vec {
namespace {

using data2vec::testing::tensors_close;

// sum_d f(p - t) over D, times scale, averaged over N, by explicit loops in double.
template <typename F>
double loss_by_hand(const torch::Tensor& p, const torch::Tensor& t, double scale, F f) {
  auto pa = p.to(torch::kFloat64).contiguous();
  auto ta = t.to(torch::kFloat64).contiguous();
  auto a = pa.accessor<double, 2>();
  auto b = ta.accessor<double, 2>();
  double total = 0.0;
  for (int64_t n = 0; n < pa.size(0); ++n) {
    double row = 0.0;
    for (int64_t d = 0; d < pa.size(1); ++d) row += f(a[n][d] - b[n][d]);
    total += row * scale;
  }
  return total / double(pa.size(0));
}

double smooth_l1(double x, double beta) {
  const double ax = std::abs(x);
  return ax < beta ? 0.5 * x * x / beta : ax - 0.5 * beta;
}

struct LossInputs {
  torch::Tensor predictions, targets;  // [N,D]
};

LossInputs make_inputs() {
  torch::manual_seed(0);
  // Differences spread over [-15, 15]: both branches of smooth L1 at beta 2 and 4.
  auto targets = torch::randn({7, 6});
  auto predictions = targets + (torch::rand({7, 6}) * 30 - 15);
  return {predictions, targets};
}

TEST(RegressionLoss, MseDefaultScaleIsInvSqrtD) {
  const auto in = make_inputs();
  const auto loss = regression_loss(in.predictions, in.targets, LossOptions());
  EXPECT_EQ(loss.dim(), 0);
  const double expected = loss_by_hand(in.predictions, in.targets, 1.0 / std::sqrt(6.0),
                                       [](double x) { return x * x; });
  EXPECT_NEAR(loss.item<double>(), expected, 1e-5 * std::abs(expected));
}

TEST(RegressionLoss, MseExplicitScale) {
  const auto in = make_inputs();
  const auto loss = regression_loss(in.predictions, in.targets, LossOptions().beta(0).scale(0.3));
  EXPECT_EQ(loss.dim(), 0);
  const double expected =
      loss_by_hand(in.predictions, in.targets, 0.3, [](double x) { return x * x; });
  EXPECT_NEAR(loss.item<double>(), expected, 1e-5 * std::abs(expected));
}

TEST(RegressionLoss, SmoothL1Beta2And4ByHand) {
  const auto in = make_inputs();
  // Both regimes really occur.
  const auto diff = (in.predictions - in.targets).abs();
  ASSERT_GT((diff < 2).sum().item<int64_t>(), 0);
  ASSERT_GT((diff > 4).sum().item<int64_t>(), 0);
  for (double beta : {2.0, 4.0}) {
    const auto loss =
        regression_loss(in.predictions, in.targets, LossOptions().beta(beta).scale(1));
    EXPECT_EQ(loss.dim(), 0);
    const double expected = loss_by_hand(in.predictions, in.targets, 1.0,
                                         [beta](double x) { return smooth_l1(x, beta); });
    EXPECT_NEAR(loss.item<double>(), expected, 1e-5 * std::abs(expected)) << "beta " << beta;
  }
}

TEST(RegressionLoss, SmoothL1WithDefaultScale) {
  const auto in = make_inputs();
  const auto loss = regression_loss(in.predictions, in.targets, LossOptions().beta(2));
  const double expected = loss_by_hand(in.predictions, in.targets, 1.0 / std::sqrt(6.0),
                                       [](double x) { return smooth_l1(x, 2.0); });
  EXPECT_NEAR(loss.item<double>(), expected, 1e-5 * std::abs(expected));
}

TEST(RegressionLoss, GradientIsScalarAndReachesPredictions) {
  const auto in = make_inputs();
  auto p = in.predictions.clone().requires_grad_(true);
  const auto loss = regression_loss(p, in.targets, LossOptions().scale(1));
  loss.backward();
  // d/dp of mean_n sum_d (p - t)^2 = 2 (p - t) / N.
  EXPECT_TRUE(tensors_close("mse grad", p.grad(), 2.0 * (in.predictions - in.targets) / 7.0, 1e-5));
}

TEST(RegressionLoss, Bf16InputsGiveFp32Loss) {
  const auto in = make_inputs();
  const auto p = in.predictions.to(torch::kBFloat16), t = in.targets.to(torch::kBFloat16);
  const auto loss = regression_loss(p, t, LossOptions());
  EXPECT_EQ(loss.scalar_type(), torch::kFloat32);
  const double expected = loss_by_hand(p, t, 1.0 / std::sqrt(6.0), [](double x) { return x * x; });
  EXPECT_NEAR(loss.item<double>(), expected, 1e-5 * std::abs(expected));
}

TEST(RegressionLoss, RejectsShapeMismatch) {
  EXPECT_THROW(regression_loss(torch::zeros({3, 4}), torch::zeros({3, 5}), LossOptions()),
               c10::Error);
  EXPECT_THROW(regression_loss(torch::zeros({2, 3, 4}), torch::zeros({2, 3, 4}), LossOptions()),
               c10::Error);
}

TEST(MeanStdOverPositions, MatchesHandComputation) {
  torch::manual_seed(1);
  const auto y = torch::randn({9, 4}) * torch::tensor({0.5, 1.0, 2.0, 4.0});
  const auto s = mean_std_over_positions(y);
  EXPECT_EQ(s.dim(), 0);
  auto a = y.to(torch::kFloat64);
  double total = 0.0;
  for (int64_t d = 0; d < 4; ++d) {
    const auto col = a.select(1, d);
    const double mean = col.mean().item<double>();
    const double var = (col - mean).pow(2).sum().item<double>() / 8.0;  // unbiased, as torch.var
    total += std::sqrt(var + 1e-6);
  }
  EXPECT_NEAR(s.item<double>(), total / 4.0, 1e-5);
  // A collapsed representation has (almost) no spread.
  EXPECT_LT(mean_std_over_positions(torch::ones({9, 4})).item<double>(), 1e-2);
}

}  // namespace
}  // namespace data2vec
