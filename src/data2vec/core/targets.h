// Teacher targets (arXiv 2202.03555, sec. 3): the average of the normalised top-K layer results.
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

namespace data2vec {

enum class TargetNorm {
  kNone,
  kInstance,  // over time, per channel and example (real positions only)
  kLayer,     // over D, parameter-free
};

TargetNorm parse_target_norm(const std::string& name);
std::string to_string(TargetNorm norm);

struct TargetOptions {
  /// K: how many of the LAST layer results are averaged. Default 8.
  TORCH_ARG(int64_t, top_k_layers) = 8;
  /// Normalisation of each of the K layers before averaging. Default instance norm.
  TORCH_ARG(TargetNorm, layer_norm_targets) = TargetNorm::kInstance;
  /// Normalisation of the average. Default none.
  TORCH_ARG(TargetNorm, final_norm) = TargetNorm::kNone;
  /// Epsilon of every normalisation. Default 1e-5.
  TORCH_ARG(double, eps) = 1e-5;
};

// Variance of x along `dim` (biased: divided by the count; unbiased: by the count - 1), kept as
// a size-1 dim, two-pass: the mean, then the mean square of x - mean. LibTorch 1.13's var()
// over a dim other than the last runs 10-16x slower on CPU (a [32,49,128] tensor over dim 1:
// 1.27 ms against 0.08; [9984,128] over dim 0: 3.7 ms against 0.64).
torch::Tensor variance(const torch::Tensor& x, int64_t dim, bool unbiased);

// Instance norm of x [B,T,D] over T per (example, channel), counting only positions where
// `padding_mask` [B,T] is false (all positions when undefined). Padded positions come out as 0.
torch::Tensor instance_norm_over_time(const torch::Tensor& x, const torch::Tensor& padding_mask,
                                      double eps);

// Parameter-free layer norm of x [...,D] over D.
torch::Tensor layer_norm_over_channels(const torch::Tensor& x, double eps);

// targets [B,T,D] fp32, no gradient: mean over the last K of `layer_results` (each [B,T,D]),
// each normalised by options.layer_norm_targets, then the average normalised by final_norm.
torch::Tensor build_targets(const std::vector<torch::Tensor>& layer_results,
                            const torch::Tensor& padding_mask, const TargetOptions& options);

}  // namespace data2vec
