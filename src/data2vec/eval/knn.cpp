#include "data2vec/eval/knn.h"

#include "data2vec/eval/batching.h"

namespace data2vec::eval {

namespace F = torch::nn::functional;

torch::Tensor knn_predict(const torch::Tensor& train_features, const torch::Tensor& train_labels,
                          const torch::Tensor& query_features, const KnnOptions& options) {
  TORCH_CHECK(train_features.dim() == 2 && query_features.dim() == 2 &&
                  train_features.size(1) == query_features.size(1),
              "knn: expected train [N,D] and queries [M,D], got ", train_features.sizes(), " and ",
              query_features.sizes());
  TORCH_CHECK(train_labels.dim() == 1 && train_labels.size(0) == train_features.size(0),
              "knn: train labels ", train_labels.sizes(), " do not match ", train_features.sizes());
  const int64_t n = train_features.size(0), m = query_features.size(0);
  TORCH_CHECK(n > 0, "knn: no train rows");
  TORCH_CHECK(options.k() > 0 && options.temperature() > 0 && options.query_chunk() > 0 &&
                  options.train_chunk() > 0,
              "knn: k, temperature and chunk sizes must be positive");
  const auto labels = train_labels.to(train_features.device(), torch::kLong);
  TORCH_CHECK(labels.min().item<int64_t>() >= 0,
              "knn: train labels contain -1 (unlabelled examples): drop them first");
  const int64_t classes =
      options.num_classes() > 0 ? options.num_classes() : labels.max().item<int64_t>() + 1;
  const int64_t k = std::min(options.k(), n);
  const auto unit = F::NormalizeFuncOptions().p(2).dim(1).eps(1e-12);
  const auto train = F::normalize(train_features.to(torch::kFloat), unit);  // [N,D]

  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> predictions;
  for (int64_t q0 = 0; q0 < m; q0 += options.query_chunk()) {
    const int64_t q1 = std::min(m, q0 + options.query_chunk());
    auto query = F::normalize(query_features.slice(0, q0, q1).to(train.device(), torch::kFloat),
                              unit);  // [m,D]
    // Running top-k over train blocks: merge the block's similarities with the best so far.
    auto best_sim = torch::empty({q1 - q0, 0}, query.options());                      // [m,<=k]
    auto best_idx = torch::empty({q1 - q0, 0}, query.options().dtype(torch::kLong));  // [m,<=k]
    for (int64_t t0 = 0; t0 < n; t0 += options.train_chunk()) {
      const int64_t t1 = std::min(n, t0 + options.train_chunk());
      auto sim = torch::cat({best_sim, query.matmul(train.slice(0, t0, t1).t())}, 1);
      auto idx = torch::cat(
          {best_idx, torch::arange(t0, t1, best_idx.options()).unsqueeze(0).expand({q1 - q0, -1})},
          1);
      auto top = sim.topk(std::min<int64_t>(k, sim.size(1)), 1);
      best_sim = std::get<0>(top);
      best_idx = idx.gather(1, std::get<1>(top));
    }
    auto neighbour_labels = labels.index({best_idx});  // [m,k]
    auto weights = options.vote() == KnnVote::kWeighted ? (best_sim / options.temperature()).exp()
                                                        : torch::ones_like(best_sim);  // [m,k]
    auto votes = torch::zeros({q1 - q0, classes}, weights.options())
                     .scatter_add_(1, neighbour_labels, weights);  // [m,C]
    predictions.push_back(votes.argmax(1));
  }
  if (predictions.empty()) return torch::empty({0}, torch::kLong);
  return torch::cat(predictions);
}

double knn_accuracy(const torch::Tensor& train_features, const torch::Tensor& train_labels,
                    const torch::Tensor& test_features, const torch::Tensor& test_labels,
                    const KnnOptions& options) {
  TORCH_CHECK(test_labels.numel() == test_features.size(0), "knn: ", test_labels.numel(),
              " test labels for ", test_features.size(0), " test rows");
  if (test_features.size(0) == 0) return 0.0;
  return accuracy(knn_predict(train_features, train_labels, test_features, options), test_labels);
}

}  // namespace data2vec::eval
