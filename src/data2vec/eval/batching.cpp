#include "data2vec/eval/batching.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <future>

namespace data2vec::eval {

ReadBatch read_batch(const Dataset& dataset, const std::vector<size_t>& indices, uint64_t seed) {
  ReadBatch out;
  std::vector<Example> examples;
  std::vector<size_t> kept;
  examples.reserve(indices.size());
  for (size_t i : indices) {
    try {
      examples.push_back(dataset.get(i, seed));
      kept.push_back(i);
    } catch (const BadSample& e) {
      spdlog::warn("eval: skipping bad example {}: {}", dataset.describe(i), e.what());
      out.skipped.push_back(i);
    }
  }
  if (examples.empty()) return out;
  out.batch = dataset.collate(std::move(examples));
  out.batch.indices = std::move(kept);
  return out;
}

void for_each_batch(const Dataset& dataset, const std::vector<size_t>& indices, int64_t batch_size,
                    const std::function<uint64_t(size_t)>& seed_of,
                    const std::function<void(size_t, ReadBatch&)>& consume) {
  TORCH_CHECK(batch_size > 0, "eval: batch_size must be positive, got ", batch_size);
  const size_t b = static_cast<size_t>(batch_size);
  const size_t num_batches = (indices.size() + b - 1) / b;
  auto read = [&](size_t k) {
    const auto first = indices.begin() + static_cast<std::ptrdiff_t>(k * b);
    const auto last =
        indices.begin() + static_cast<std::ptrdiff_t>(std::min(indices.size(), (k + 1) * b));
    return read_batch(dataset, std::vector<size_t>(first, last), seed_of(k));
  };
  std::future<ReadBatch> next;
  if (num_batches > 0) next = std::async(std::launch::async, read, size_t{0});
  for (size_t k = 0; k < num_batches; ++k) {
    ReadBatch current = next.get();
    if (k + 1 < num_batches) next = std::async(std::launch::async, read, k + 1);
    // If consume throws, the future's destructor waits for the helper before this frame goes.
    consume(k, current);
  }
}


double accuracy(const torch::Tensor& predictions, const torch::Tensor& labels) {
  TORCH_CHECK(predictions.numel() == labels.numel(), "accuracy: ", predictions.numel(),
              " predictions for ", labels.numel(), " labels");
  if (labels.numel() == 0) return 0.0;
  auto y = labels.reshape({-1}).to(predictions.device(), torch::kLong);
  return predictions.reshape({-1}).to(torch::kLong).eq(y).to(torch::kDouble).mean().item<double>();
}

}  // namespace data2vec::eval
