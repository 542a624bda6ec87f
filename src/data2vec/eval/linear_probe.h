// Linear probe (arXiv 2202.03555 sec. 4): a multinomial logistic regression on frozen features, with its L2
// strength chosen on a held-out part of the training split. Works on any [N,D] feature matrix:
// pooled encoder outputs, or raw pixels / bag-of-words / log-mel for the raw-input baseline.
//
// Objective for strength l2: mean cross-entropy + l2/2 * ||W||^2 (bias not penalised), on
// features standardised with the mean and std of the rows being fitted.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

namespace data2vec::eval {

enum class ProbeOptimizer {
  kLbfgs,  // full-batch L-BFGS with strong Wolfe line search (deterministic, the default)
  kAdamW,  // full-batch AdamW on the same objective (L2 in the loss, decay off), cosine lr
};

struct LinearProbeOptions {
  /// L2 strengths tried. Default {1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1}.
  TORCH_ARG(std::vector<double>, l2_grid) = std::vector<double>{1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1};
  /// Fraction of the train rows held out to choose L2 (0 allowed only with a one-value grid).
  /// Default 0.1.
  TORCH_ARG(double, val_fraction) = 0.1;
  /// Seed of the held-out split. Default 0.
  TORCH_ARG(uint64_t, seed) = 0;
  /// Default L-BFGS.
  TORCH_ARG(ProbeOptimizer, optimizer) = ProbeOptimizer::kLbfgs;
  /// L-BFGS iterations per fit. Default 300.
  TORCH_ARG(int64_t, lbfgs_iterations) = 300;
  /// AdamW full-batch steps per fit. Default 1000.
  TORCH_ARG(int64_t, adamw_steps) = 1000;
  /// AdamW peak learning rate (cosine-decayed to 0 over the steps). Default 1e-2.
  TORCH_ARG(double, adamw_lr) = 1e-2;
  /// Number of classes C; 0 = 1 + the largest label seen. Default 0.
  TORCH_ARG(int64_t, num_classes) = 0;
};

// A fitted probe: standardisation and the linear map.
struct LinearClassifier {
  torch::Tensor mean;    // [D]
  torch::Tensor std;     // [D] (1 where a feature is constant)
  torch::Tensor weight;  // [C,D]
  torch::Tensor bias;    // [C]

  torch::Tensor logits(const torch::Tensor& features) const;   // [N,D] -> [N,C]
  torch::Tensor predict(const torch::Tensor& features) const;  // [N,D] -> [N] int64
};

// Fits the probe with strength `l2` on all of (features [N,D], labels [N] in 0..C-1).
LinearClassifier fit_linear_classifier(const torch::Tensor& features, const torch::Tensor& labels,
                                       int64_t num_classes, double l2,
                                       const LinearProbeOptions& options = {});

struct LinearProbeResult {
  double test_acc = 0;          // top-1 on the test rows, refit on all train rows
  double train_acc = 0;         // top-1 on all train rows, same refit
  std::vector<double> l2_grid;  // the strengths tried
  std::vector<double> val_acc;  // held-out accuracy per strength (empty without a split)
  double chosen_l2 = 0;         // best held-out accuracy; ties go to the larger (simpler) L2
  int64_t num_train = 0, num_val = 0, num_test = 0;
  LinearClassifier classifier;  // the refit
};

// Chooses L2 on a seeded val_fraction of the train rows, refits on all train rows with it and
// scores both splits. Features are fp32 [N,D] (any device); labels int64 [N].
LinearProbeResult linear_probe(const torch::Tensor& train_features,
                               const torch::Tensor& train_labels,
                               const torch::Tensor& test_features, const torch::Tensor& test_labels,
                               const LinearProbeOptions& options = {});

}  // namespace data2vec::eval
