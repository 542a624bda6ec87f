// Representation collapse (arXiv 2202.03555, sec. 3): after a warm-up, targets or predictions that no longer vary
// between positions mean training is lost. A pure check; the trainer decides what to do.
#pragma once

#include <torch/torch.h>

#include <optional>
#include <string>

namespace data2vec {

struct CollapseOptions {
  /// Steps before the check starts. Default 5000.
  TORCH_ARG(int64_t, warmup_steps) = 5000;
  /// Minimum target std (fairseq calls it min_target_var). Default 0.1.
  TORCH_ARG(double, min_target_std) = 0.1;
  /// Minimum prediction std (fairseq: min_pred_var). Default 0.01.
  TORCH_ARG(double, min_pred_std) = 0.01;
};

// A message naming the collapsed quantity, or nothing when training looks healthy.
std::optional<std::string> detect_collapse(int64_t step, double target_std, double pred_std,
                                           const CollapseOptions& options);

}  // namespace data2vec
