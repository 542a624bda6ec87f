// Frozen-encoder features for the probes (arXiv 2202.03555 sec. 4): pool the encoder's final output per example and
// collect [N,D] fp32 features with their labels, for any encoder and dataset through the core
// interfaces.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "data2vec/core/dataset.h"
#include "data2vec/core/encoder.h"
#include "data2vec/io/probe_layers.h"

namespace data2vec::eval {

enum class PoolMode {
  kMean,   // mean over real positions: prefix tokens (CLS) and padding left out
  kFirst,  // the first output position (the CLS token of encoders that have one)
  kGrid,   // a square patch grid's four quadrants, each averaged: [B,4D], so a linear probe
           // keeps the coarse layout that one mean throws away (spatial pooling of feature maps
           // before a linear classifier, as in Goyal et al.'s benchmark, arXiv 1905.01235)
};

// "mean" | "cls" (or "first") | "grid".
PoolMode parse_pool_mode(const std::string& name);
std::string to_string(PoolMode mode);

// How many D-dim vectors one example pools to: 4 in grid mode, else 1.
int64_t pooled_vectors(PoolMode mode);

// Which tensor of an EncoderOutput is pooled: kFinalLayer = out.x; 0 = out.local_features (what
// the transformer reads, before any mask); k >= 1 = out.layer_results[k-1] (block k's output when
// the encoder was built with LayerResultKind::kBlock).
constexpr int64_t kFinalLayer = io::kFinalProbeLayer;

// Config key eval.probe_layer: one layer as above, or a comma-separated list ("1,2,3,4",
// "final,3") whose pooled features are concatenated in that order, as in DINO's linear
// evaluation of small ViTs (arXiv 2104.14294 sec. 4), which concatenates the last blocks' outputs.
// The grammar lives with the key (io/probe_layers.h), so the config check and evaluate agree.
using io::parse_probe_layer;
using io::parse_probe_layers;

// How a report names the probed layers: "" for the final output alone, else "local features",
// "block 3", "blocks 1+2+3+4 concatenated".
std::string describe_probe_layers(const std::vector<int64_t>& layers);

// `out` with x replaced by the chosen layer's [B,T,D] (padding mask and the rest unchanged);
// an error names the layer when the encoder does not have it.
EncoderOutput select_layer(const EncoderOutput& out, int64_t layer);

// One vector per example from out.x [B,T,D] -> [B,D] fp32 ([B,4D] in grid mode). Mean mode
// averages positions num_prefix_tokens.. of each example that are not padding; out.padding_mask
// may cover all T positions ([B,T]) or only the T - num_prefix_tokens sequence positions. Grid
// mode needs a square number of sequence positions and no padding (images). Differentiable.
torch::Tensor pool_features(const EncoderOutput& out, int64_t num_prefix_tokens, PoolMode mode);

struct ExtractOptions {
  /// Examples per forward. Default 64.
  TORCH_ARG(int64_t, batch_size) = 64;
  /// Where batches run; the encoder must already be there. Default CPU.
  TORCH_ARG(torch::Device, device) = torch::kCPU;
  /// bf16 autocast around the forward (features are returned in fp32). Default false.
  TORCH_ARG(bool, bf16) = false;
  /// How an encoder output becomes one vector. Default mean.
  TORCH_ARG(PoolMode, pool) = PoolMode::kMean;
  /// Which layers are pooled (see select_layer), concatenated in this order. Default final.
  TORCH_ARG(std::vector<int64_t>, layers) = {kFinalLayer};
  /// Only the first `limit` examples (of `indices` when given, else of the dataset), counting
  /// the blocks of one document (Dataset::document) as one example; 0 = all.
  /// Default 0.
  TORCH_ARG(int64_t, limit) = 0;
  /// Dataset indices to read, in this order; empty = 0..size-1. Default empty.
  TORCH_ARG(std::vector<size_t>, indices) = {};
  /// Called after each batch with (examples done, examples total). Default none.
  TORCH_ARG(std::function<void(size_t, size_t)>, progress) = nullptr;
};

// Features of the examples that could be read, in reading order. Examples that share a
// document id (Dataset::document >= 0) become one row: the mean of their features, with the
// first block's label and index.
struct FeatureSet {
  torch::Tensor features;       // [N,D] float32, CPU
  torch::Tensor labels;         // [N] int64, CPU (-1 where unknown)
  std::vector<size_t> indices;  // [N] dataset index of each row (a document's first block)
  int64_t num_skipped = 0;      // examples that threw BadSample (each logged by name)
};

// Turns a collated batch (already on the options' device) into [B,D] features.
using BatchFeaturizer = std::function<torch::Tensor(const Batch&)>;

// Encoder features: eval mode (the previous train/eval mode is restored afterwards), no grad,
// dataset.get(i, 0) (the dataset decides whether seed 0 means "no augmentation"), no mask,
// each of options.layers pooled by options.pool, concatenated -> [N, layers x D].
FeatureSet extract_features(EncoderImpl& encoder, const Dataset& dataset,
                            const ExtractOptions& options = {});

// The same loop over any featurizer, e.g. the raw-input baseline
// `[](const Batch& b) { return b.input.source.flatten(1); }`. Runs under no-grad; options.pool
// is unused.
FeatureSet extract_features(const BatchFeaturizer& featurize, const Dataset& dataset,
                            const ExtractOptions& options = {});

}  // namespace data2vec::eval
