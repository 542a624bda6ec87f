// Synthetic sequences for the toy encoder: each example is a noisy mixture of a class's
// sinusoids over time, so masked steps are predictable from context and classes are separable.
// Generated from (seed, index): no files, identical on every machine.
#pragma once

#include "data2vec/core/dataset.h"

namespace data2vec {

struct ToyDatasetOptions {
  TORCH_ARG(int64_t, size) = 2048;
  TORCH_ARG(int64_t, length) = 32;      // T
  TORCH_ARG(int64_t, input_dim) = 16;   // F
  TORCH_ARG(int64_t, num_classes) = 4;
  TORCH_ARG(double, noise) = 0.3;
  /// Seeds the classes' frequencies: splits of one task share it.
  TORCH_ARG(uint64_t, seed) = 7;
  /// Example i of this split is example first_index + i of the task (disjoint splits).
  TORCH_ARG(int64_t, first_index) = 0;
  /// Pad examples to random lengths in [length/2, length] (tests the padding paths).
  TORCH_ARG(bool, variable_length) = false;
};

class ToyDataset : public Dataset {
 public:
  explicit ToyDataset(const ToyDatasetOptions& options);
  size_t size() const override { return size_t(options_.size()); }
  Example get(size_t index, uint64_t seed) const override;
  Batch collate(std::vector<Example> examples) const override;
  int64_t num_classes() const override { return options_.num_classes(); }

 private:
  ToyDatasetOptions options_;
  torch::Tensor class_frequencies_;  // [classes, F]
};

}  // namespace data2vec
