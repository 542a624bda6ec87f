// The regression loss (arXiv 2202.03555, sec. 3) and the spread statistics logged beside it (arXiv 2202.03555, sec. 3).
#pragma once

#include <torch/torch.h>

namespace data2vec {

struct LossOptions {
  /// 0 -> squared error; > 0 -> smooth L1 with this beta. Default 0.
  TORCH_ARG(double, beta) = 0.0;
  /// Multiplies the per-position loss (summed over D); <= 0 means 1/sqrt(D). Default 1/sqrt(D).
  TORCH_ARG(double, scale) = -1.0;
};

// predictions, targets: [N,D] at the N masked positions. Returns a scalar: the per-position loss
// summed over D, times the scale, averaged over the N positions.
torch::Tensor regression_loss(const torch::Tensor& predictions, const torch::Tensor& targets,
                              const LossOptions& options);

// Mean over D of the standard deviation over N rows of y [N,D]: how much the representation
// still varies between positions. Near zero means collapse.
torch::Tensor mean_std_over_positions(const torch::Tensor& y);

}  // namespace data2vec
