// k-NN accuracy (arXiv 2202.03555 sec. 4): the cheap monitor of a representation during pretraining. Cosine
// similarity between L2-normalised features; by default the votes of the k nearest train rows are
// weighted by exp(similarity / temperature) as in DINO (k = 20, temperature 0.07).
#pragma once

#include <torch/torch.h>

#include <cstdint>

namespace data2vec::eval {

enum class KnnVote {
  kWeighted,  // each neighbour votes exp(sim / temperature) for its class (DINO)
  kMajority,  // each neighbour votes 1; ties go to the lower class index
};

struct KnnOptions {
  /// Neighbours per query (clamped to the number of train rows). Default 20.
  TORCH_ARG(int64_t, k) = 20;
  /// Temperature of the weighted vote. Default 0.07.
  TORCH_ARG(double, temperature) = 0.07;
  /// Default weighted.
  TORCH_ARG(KnnVote, vote) = KnnVote::kWeighted;
  /// Query rows per similarity block. Default 256.
  TORCH_ARG(int64_t, query_chunk) = 256;
  /// Train rows per similarity block; the block is query_chunk x train_chunk floats, so memory
  /// stays bounded whatever N is. Default 16384.
  TORCH_ARG(int64_t, train_chunk) = 16384;
  /// Number of classes C; 0 = 1 + the largest train label. Default 0.
  TORCH_ARG(int64_t, num_classes) = 0;
};

// Predicted class of each query row: train features [N,D], train labels [N] (>= 0), queries
// [M,D] -> [M] int64.
torch::Tensor knn_predict(const torch::Tensor& train_features, const torch::Tensor& train_labels,
                          const torch::Tensor& query_features, const KnnOptions& options = {});

// Top-1 accuracy of knn_predict on (test features [M,D], test labels [M]); 0 when M = 0.
double knn_accuracy(const torch::Tensor& train_features, const torch::Tensor& train_labels,
                    const torch::Tensor& test_features, const torch::Tensor& test_labels,
                    const KnnOptions& options = {});

}  // namespace data2vec::eval
