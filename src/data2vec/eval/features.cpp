#include "data2vec/eval/features.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <unordered_map>
#include <unordered_set>

#include "data2vec/eval/batching.h"
#include "data2vec/train/device.h"

namespace data2vec::eval {

PoolMode parse_pool_mode(const std::string& name) {
  if (name == "mean") return PoolMode::kMean;
  if (name == "cls" || name == "first") return PoolMode::kFirst;
  if (name == "grid") return PoolMode::kGrid;
  throw std::invalid_argument("pool mode '" + name + "': expected mean, cls or grid");
}

std::string to_string(PoolMode mode) {
  switch (mode) {
    case PoolMode::kMean: return "mean";
    case PoolMode::kFirst: return "cls";
    case PoolMode::kGrid: return "grid";
  }
  return "?";
}

int64_t pooled_vectors(PoolMode mode) {
  return mode == PoolMode::kGrid ? 4 : 1;
}

std::string describe_probe_layers(const std::vector<int64_t>& layers) {
  const auto name = [](int64_t layer) {
    return layer == kFinalLayer ? std::string("final")
           : layer == 0         ? std::string("local features")
                                : std::to_string(layer);
  };
  if (layers.size() == 1) {
    const int64_t layer = layers.front();
    return layer == kFinalLayer ? "" : layer == 0 ? "local features" : "block " + name(layer);
  }
  std::string joined;
  for (const int64_t layer : layers) joined += (joined.empty() ? "" : "+") + name(layer);
  return "blocks " + joined + " concatenated";
}

EncoderOutput select_layer(const EncoderOutput& out, int64_t layer) {
  if (layer == kFinalLayer) return out;
  EncoderOutput chosen = out;
  if (layer == 0) {
    TORCH_CHECK(out.local_features.defined(),
                "probe layer 0: this encoder's output carries no local features");
    TORCH_CHECK(out.local_features.sizes() == out.x.sizes(), "probe layer 0: local features ",
                out.local_features.sizes(), " are not aligned with the output ", out.x.sizes());
    chosen.x = out.local_features;
    return chosen;
  }
  const auto layers = static_cast<int64_t>(out.layer_results.size());
  TORCH_CHECK(layer >= 1 && layer <= layers, "probe layer ", layer, ": the encoder has ", layers,
              " layers (use final, 0 or 1..", layers, ")");
  chosen.x = out.layer_results[size_t(layer - 1)];
  return chosen;
}

torch::Tensor pool_features(const EncoderOutput& out, int64_t num_prefix_tokens, PoolMode mode) {
  TORCH_CHECK(out.x.defined() && out.x.dim() == 3, "pool_features: expected x [B,T,D], got ",
              out.x.defined() ? out.x.sizes() : torch::IntArrayRef{});
  const int64_t t = out.x.size(1);
  TORCH_CHECK(num_prefix_tokens >= 0 && num_prefix_tokens < t, "pool_features: ", num_prefix_tokens,
              " prefix tokens in a sequence of ", t);
  auto x = out.x.to(torch::kFloat);
  if (mode == PoolMode::kFirst) return x.select(1, 0);  // [B,D]
  x = x.slice(1, num_prefix_tokens);                    // [B,T',D] sequence positions only
  if (mode == PoolMode::kGrid) {
    const int64_t positions = x.size(1);
    const auto side = int64_t(std::lround(std::sqrt(double(positions))));
    TORCH_CHECK(side * side == positions && side >= 2, "pool_features: grid pooling needs a square "
                "patch grid of at least 2 x 2, got ", positions, " positions");
    TORCH_CHECK(!out.padding_mask.defined() || !out.padding_mask.any().item<bool>(),
                "pool_features: grid pooling does not take padded inputs");
    const auto grid = x.transpose(1, 2).reshape({x.size(0), x.size(2), side, side});  // [B,D,S,S]
    // Odd sides share the middle row / column between quadrants (adaptive pooling's rule).
    return torch::adaptive_avg_pool2d(grid, {2, 2}).flatten(2).transpose(1, 2).flatten(1);
  }
  if (!out.padding_mask.defined()) return x.mean(1);
  auto pad = out.padding_mask;
  if (pad.size(1) == t && num_prefix_tokens > 0) pad = pad.slice(1, num_prefix_tokens);
  TORCH_CHECK(pad.size(1) == x.size(1), "pool_features: padding mask ", out.padding_mask.sizes(),
              " matches neither T = ", t, " nor T - prefix = ", x.size(1));
  auto keep = pad.logical_not().to(torch::kFloat).unsqueeze(-1);  // [B,T',1]
  // An example that is all padding pools to zeros instead of NaN.
  return (x * keep).sum(1) / keep.sum(1).clamp_min(1.0);
}

namespace {

// Restores an encoder's train/eval mode on scope exit.
class ModeGuard {
 public:
  explicit ModeGuard(torch::nn::Module& module)
      : module_(module), was_training_(module.is_training()) {}
  ~ModeGuard() { module_.train(was_training_); }
  ModeGuard(const ModeGuard&) = delete;
  ModeGuard& operator=(const ModeGuard&) = delete;

 private:
  torch::nn::Module& module_;
  bool was_training_;
};

// Cuts `indices` after the first `limit` examples (0 = all), the blocks of one document
// counting as one example.
void keep_first_examples(std::vector<size_t>& indices, const Dataset& dataset, int64_t limit) {
  if (limit <= 0) return;
  std::unordered_set<int64_t> documents;
  int64_t examples = 0;
  for (size_t i = 0; i < indices.size(); ++i) {
    const int64_t document = dataset.document(indices[i]);
    const bool new_example = document < 0 || documents.insert(document).second;
    if (new_example && ++examples > limit) {
      indices.resize(i);
      return;
    }
  }
}

// Rows that share a document id averaged into one, in order of each document's first row.
FeatureSet average_documents(FeatureSet set, const Dataset& dataset) {
  const auto n = static_cast<int64_t>(set.indices.size());
  std::vector<int64_t> group(size_t(n), 0);  // output row of each input row
  std::vector<int64_t> first_row;            // input row that opens each output row
  std::unordered_map<int64_t, int64_t> row_of_document;
  bool any_document = false;
  for (int64_t r = 0; r < n; ++r) {
    const int64_t document = dataset.document(set.indices[size_t(r)]);
    any_document = any_document || document >= 0;
    const auto found = document < 0 ? row_of_document.end() : row_of_document.find(document);
    if (found != row_of_document.end()) {
      group[size_t(r)] = found->second;
      continue;
    }
    group[size_t(r)] = static_cast<int64_t>(first_row.size());
    if (document >= 0) row_of_document.emplace(document, group[size_t(r)]);
    first_row.push_back(r);
  }
  if (!any_document) return set;
  const auto rows = static_cast<int64_t>(first_row.size());
  const auto index = torch::tensor(group, torch::kLong);  // [N]
  auto sums = torch::zeros({rows, set.features.size(1)}, set.features.options());
  sums.index_add_(0, index, set.features);
  const auto counts = torch::zeros({rows}, set.features.options())
                          .index_add_(0, index, torch::ones({n}, set.features.options()));
  const auto first = torch::tensor(first_row, torch::kLong);
  FeatureSet out;
  out.features = sums / counts.unsqueeze(1);  // [rows,D]
  out.labels = set.labels.index_select(0, first);
  for (const int64_t r : first_row) out.indices.push_back(set.indices[size_t(r)]);
  out.num_skipped = set.num_skipped;
  return out;
}

}  // namespace

FeatureSet extract_features(const BatchFeaturizer& featurize, const Dataset& dataset,
                            const ExtractOptions& options) {
  std::vector<size_t> indices = options.indices();
  if (indices.empty()) {
    indices.resize(dataset.size());
    std::iota(indices.begin(), indices.end(), size_t{0});
  }
  for (size_t i : indices) {
    TORCH_CHECK(i < dataset.size(), "extract_features: index ", i,
                " out of range for a dataset of ", dataset.size(), " examples");
  }
  keep_first_examples(indices, dataset, options.limit());

  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> features, labels;
  FeatureSet out;
  size_t done = 0;
  for_each_batch(
      dataset, indices, options.batch_size(), [](size_t) { return uint64_t{0}; },
      [&](size_t, ReadBatch& read) {
        out.num_skipped += static_cast<int64_t>(read.skipped.size());
        done += read.skipped.size();
        if (!read.empty()) {
          Batch batch = std::move(read.batch);
          batch.input = batch.input.to(options.device());
          torch::Tensor f;
          {
            train::AutocastGuard autocast(options.device(), options.bf16() ? "bf16" : "fp32");
            f = featurize(batch);
          }
          TORCH_CHECK(f.dim() == 2 && f.size(0) == batch.input.batch_size(),
                      "extract_features: featurizer returned ", f.sizes(), " for a batch of ",
                      batch.input.batch_size());
          features.push_back(f.detach().to(torch::kCPU, torch::kFloat));
          labels.push_back(batch.labels.to(torch::kCPU, torch::kLong));
          out.indices.insert(out.indices.end(), batch.indices.begin(), batch.indices.end());
          done += batch.indices.size();
        }
        if (options.progress()) options.progress()(done, indices.size());
      });
  if (out.num_skipped > 0) {
    spdlog::warn("extract_features: skipped {} of {} examples (bad samples, named above)",
                 out.num_skipped, indices.size());
  }
  if (features.empty()) {
    out.features = torch::empty({0, 0});
    out.labels = torch::empty({0}, torch::kLong);
  } else {
    out.features = torch::cat(features);  // [N,D]
    out.labels = torch::cat(labels);      // [N]
  }
  return average_documents(std::move(out), dataset);
}

FeatureSet extract_features(EncoderImpl& encoder, const Dataset& dataset,
                            const ExtractOptions& options) {
  ModeGuard mode(encoder);
  encoder.eval();
  const int64_t prefix = encoder.num_prefix_tokens();
  const PoolMode pool = options.pool();
  const std::vector<int64_t> layers = options.layers();
  TORCH_CHECK(!layers.empty(), "extract_features: no layer to pool");
  return extract_features(
      [&](const Batch& batch) {
        const auto out = encoder.extract_features(batch.input, torch::Tensor());
        std::vector<torch::Tensor> pooled;
        for (const int64_t layer : layers) {
          pooled.push_back(pool_features(select_layer(out, layer), prefix, pool));
        }
        return pooled.size() == 1 ? pooled.front() : torch::cat(pooled, 1);
      },
      dataset, options);
}

}  // namespace data2vec::eval
