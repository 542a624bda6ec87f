#include "data2vec/core/dataset.h"

namespace data2vec {

Batch Dataset::collate(std::vector<Example> examples) const {
  TORCH_CHECK(!examples.empty(), "collate: empty batch");
  std::vector<torch::Tensor> sources;
  std::vector<int64_t> labels;
  sources.reserve(examples.size());
  for (auto& e : examples) {
    sources.push_back(std::move(e.source));
    labels.push_back(e.label);
  }
  Batch batch;
  batch.input.source = torch::stack(sources);
  batch.labels = torch::tensor(labels, torch::kLong);
  return batch;
}

}  // namespace data2vec
