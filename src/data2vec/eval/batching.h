// Plumbing shared by the evaluators: reading a list of examples into batches (bad examples
// skipped, counted and named), reading the next batch on a helper thread while the model runs the
// current one, and bf16 autocast for a scope.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "data2vec/core/dataset.h"

namespace data2vec::eval {

// A batch read from a dataset, and the examples that could not be read.
struct ReadBatch {
  Batch batch;                  // undefined source when every example was bad
  std::vector<size_t> skipped;  // dataset indices of the examples that threw BadSample
  bool empty() const { return !batch.input.source.defined(); }
};

// Reads `indices` with dataset.get(i, seed) and collates them; examples that throw BadSample are
// logged (spdlog warning naming dataset.describe(i)) and left out. batch.indices always holds the
// dataset indices of the collated examples.
ReadBatch read_batch(const Dataset& dataset, const std::vector<size_t>& indices, uint64_t seed);

// Splits `indices` into consecutive chunks of `batch_size` and calls consume(k, batch) for each in
// order, reading batch k+1 on a helper thread while batch k is consumed. The helper thread runs
// with the default (no autocast, grad on) thread-local state; an exception in either thread
// reaches the caller. `seed_of(k)` is the dataset seed for batch k.
void for_each_batch(const Dataset& dataset, const std::vector<size_t>& indices, int64_t batch_size,
                    const std::function<uint64_t(size_t)>& seed_of,
                    const std::function<void(size_t, ReadBatch&)>& consume);


// Fraction of `predictions` [N] equal to `labels` [N]; 0 for N = 0.
double accuracy(const torch::Tensor& predictions, const torch::Tensor& labels);

}  // namespace data2vec::eval
