#include "data2vec/core/loss.h"

#include <cmath>

#include "data2vec/core/targets.h"

namespace data2vec {

torch::Tensor regression_loss(const torch::Tensor& predictions, const torch::Tensor& targets,
                              const LossOptions& options) {
  TORCH_CHECK(predictions.sizes() == targets.sizes(), "loss: predictions ", predictions.sizes(),
              " and targets ", targets.sizes(), " differ in shape");
  TORCH_CHECK(predictions.dim() == 2, "loss: expected [N,D] tensors, got ", predictions.sizes());
  const auto p = predictions.to(torch::kFloat32);
  const auto t = targets.to(torch::kFloat32);
  torch::Tensor per_element;  // [N,D]
  if (options.beta() == 0.0) {
    per_element = (p - t).pow(2);
  } else {
    per_element = torch::smooth_l1_loss(p, t, at::Reduction::None, options.beta());
  }
  const double scale = options.scale() > 0 ? options.scale() : 1.0 / std::sqrt(double(p.size(1)));
  const auto num_positions = std::max<int64_t>(p.size(0), 1);
  return per_element.sum() * scale / static_cast<double>(num_positions);
}

torch::Tensor mean_std_over_positions(const torch::Tensor& y) {
  torch::NoGradGuard no_grad;
  const auto y32 = y.detach().to(torch::kFloat32);
  if (y32.size(0) < 2) return torch::zeros({}, y32.options());
  return torch::sqrt(variance(y32, /*dim=*/0, /*unbiased=*/true) + 1e-6).mean();
}

}  // namespace data2vec
