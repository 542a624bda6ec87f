#include "data2vec/core/toy_dataset.h"

namespace data2vec {

ToyDataset::ToyDataset(const ToyDatasetOptions& options) : options_(options) {
  auto generator = at::detail::createCPUGenerator(options.seed());
  class_frequencies_ =
      torch::rand({options.num_classes(), options.input_dim()}, generator) * 0.8 + 0.1;
}

Example ToyDataset::get(size_t index, uint64_t /*seed*/) const {
  // The example depends on its index only (no augmentation), so evaluation sees fixed data.
  const uint64_t example = uint64_t(options_.first_index()) + index;
  auto generator = at::detail::createCPUGenerator(options_.seed() * 1000003ULL + example);
  const int64_t label = int64_t(example % uint64_t(options_.num_classes()));
  auto length = options_.length();
  if (options_.variable_length()) {
    length = torch::randint(options_.length() / 2, options_.length() + 1, {1}, generator).item<int64_t>();
  }
  const auto t = torch::arange(length, torch::kFloat32).unsqueeze(1);          // [T,1]
  const auto phase = torch::rand({1, options_.input_dim()}, generator) * 6.2831853;  // [1,F]
  auto x = torch::sin(t * class_frequencies_[label].unsqueeze(0) + phase);  // [T,F]
  x = x + options_.noise() * torch::randn({length, options_.input_dim()}, generator);
  return {x, label};
}

Batch ToyDataset::collate(std::vector<Example> examples) const {
  const auto b = int64_t(examples.size());
  int64_t t = 0;
  for (const auto& e : examples) t = std::max(t, e.source.size(0));
  Batch batch;
  batch.input.source = torch::zeros({b, t, options_.input_dim()});
  auto padding = torch::ones({b, t}, torch::kBool);
  std::vector<int64_t> labels;
  for (int64_t i = 0; i < b; ++i) {
    const auto len = examples[i].source.size(0);
    batch.input.source[i].slice(0, 0, len).copy_(examples[i].source);
    padding[i].slice(0, 0, len).fill_(false);
    labels.push_back(examples[i].label);
  }
  if (padding.any().item<bool>()) batch.input.padding_mask = padding;
  batch.labels = torch::tensor(labels, torch::kLong);
  return batch;
}

}  // namespace data2vec
