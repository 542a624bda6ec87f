// Pooling and frozen-feature extraction through the Encoder / Dataset interfaces.

#include <set>

#include "data2vec/core/toy_encoder.h"
#include "data2vec/eval/features.h"
#include "data2vec/nn/gemm.h"
#include "support.h"

namespace {

using namespace data2vec;
using namespace data2vec::eval;
using data2vec::testing::tensors_close;

// In-memory vectors [T_i,F] with labels; examples listed in `bad` throw BadSample; collate pads to
// the longest example and marks padding.
class VectorDataset : public Dataset {
 public:
  VectorDataset(std::vector<torch::Tensor> sources, std::vector<int64_t> labels,
                std::set<size_t> bad = {})
      : sources_(std::move(sources)), labels_(std::move(labels)), bad_(std::move(bad)) {}
  size_t size() const override { return sources_.size(); }
  Example get(size_t index, uint64_t) const override {
    if (bad_.count(index)) throw BadSample(describe(index) + ": corrupt");
    return {sources_.at(index), labels_.at(index)};
  }
  Batch collate(std::vector<Example> examples) const override {
    int64_t t = 0;
    for (const auto& e : examples) t = std::max(t, e.source.size(0));
    const auto b = static_cast<int64_t>(examples.size());
    const auto f = examples[0].source.size(1);
    Batch batch;
    batch.input.source = torch::zeros({b, t, f});
    batch.input.padding_mask = torch::ones({b, t}, torch::kBool);
    std::vector<int64_t> labels;
    for (int64_t i = 0; i < b; ++i) {
      const auto& s = examples[static_cast<size_t>(i)].source;
      batch.input.source[i].slice(0, 0, s.size(0)).copy_(s);
      batch.input.padding_mask[i].slice(0, 0, s.size(0)).fill_(false);
      labels.push_back(examples[static_cast<size_t>(i)].label);
    }
    batch.labels = torch::tensor(labels, torch::kLong);
    return batch;
  }
  std::string describe(size_t index) const override {
    return "item_" + std::to_string(index) + ".bin";
  }
  int64_t num_classes() const override { return 3; }

 private:
  std::vector<torch::Tensor> sources_;
  std::vector<int64_t> labels_;
  std::set<size_t> bad_;
};

VectorDataset make_dataset(int64_t n, std::vector<int64_t> lengths = {},
                           std::set<size_t> bad = {}) {
  torch::manual_seed(7);
  std::vector<torch::Tensor> sources;
  std::vector<int64_t> labels;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t t = lengths.empty() ? 6 : lengths[static_cast<size_t>(i)];
    sources.push_back(torch::randn({t, 16}));
    labels.push_back(i % 3);
  }
  return VectorDataset(sources, labels, std::move(bad));
}

ToyEncoder make_encoder() {
  torch::manual_seed(3);
  return ToyEncoder(ToyEncoderOptions().input_dim(16).dim(32).depth(2).max_len(16));
}

TEST(PoolFeatures, MeanSkipsPrefixAndPadding) {
  // x[b,t,d] = 100 b + 10 t + d, one prefix token, example 1 padded at its last two positions.
  auto x = torch::empty({2, 5, 3});
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t t = 0; t < 5; ++t)
      for (int64_t d = 0; d < 3; ++d) x[b][t][d] = 100.0 * b + 10.0 * t + d;
  EncoderOutput out;
  out.x = x;
  out.padding_mask = torch::tensor({0, 0, 0, 0, 0, 0, 0, 0, 1, 1}, torch::kBool).view({2, 5});
  // By hand: example 0 averages t = 1..4 -> 10 * 2.5 + d; example 1 averages t = 1..2 -> 100 +
  // 10 * 1.5 + d.
  auto expected = torch::tensor({25.0f, 26.0f, 27.0f, 115.0f, 116.0f, 117.0f}).view({2, 3});
  EXPECT_TRUE(
      tensors_close("mean, mask over T", pool_features(out, 1, PoolMode::kMean), expected, 1e-5));

  // The same padding given over the T - prefix sequence positions only.
  out.padding_mask = torch::tensor({0, 0, 0, 0, 0, 0, 1, 1}, torch::kBool).view({2, 4});
  EXPECT_TRUE(tensors_close("mean, mask over T-prefix", pool_features(out, 1, PoolMode::kMean),
                            expected, 1e-5));

  // No prefix, no padding: a plain mean over all five positions -> 10 * 2 + d (+ 100 b).
  out.padding_mask = torch::Tensor();
  auto plain = torch::tensor({20.0f, 21.0f, 22.0f, 120.0f, 121.0f, 122.0f}).view({2, 3});
  EXPECT_TRUE(tensors_close("mean, no mask", pool_features(out, 0, PoolMode::kMean), plain, 1e-5));

  auto first = torch::tensor({0.0f, 1.0f, 2.0f, 100.0f, 101.0f, 102.0f}).view({2, 3});
  EXPECT_TRUE(tensors_close("cls", pool_features(out, 1, PoolMode::kFirst), first, 0));
}

TEST(PoolFeatures, AllPaddingGivesZerosAndBadMaskThrows) {
  EncoderOutput out;
  out.x = torch::ones({1, 3, 2});
  out.padding_mask = torch::ones({1, 3}, torch::kBool);
  EXPECT_TRUE(tensors_close("all padding", pool_features(out, 0, PoolMode::kMean),
                            torch::zeros({1, 2}), 0));
  out.padding_mask = torch::zeros({1, 5}, torch::kBool);
  EXPECT_THROW(pool_features(out, 0, PoolMode::kMean), c10::Error);
  EXPECT_EQ(parse_pool_mode("cls"), PoolMode::kFirst);
  EXPECT_EQ(parse_pool_mode(to_string(PoolMode::kMean)), PoolMode::kMean);
  EXPECT_THROW(parse_pool_mode("max"), std::invalid_argument);
}

TEST(ExtractFeatures, MatchesOneForwardInEvalModeAndRestoresMode) {
  auto encoder = make_encoder();
  auto data = make_dataset(10);
  encoder->train();
  size_t last_done = 0, calls = 0;
  auto set = extract_features(
      *encoder, data, ExtractOptions().batch_size(4).progress([&](size_t done, size_t total) {
        EXPECT_EQ(total, 10u);
        last_done = done;
        ++calls;
      }));
  EXPECT_TRUE(encoder->is_training());
  EXPECT_EQ(calls, 3u);
  EXPECT_EQ(last_done, 10u);
  ASSERT_EQ(set.features.sizes(), (std::vector<int64_t>{10, 32}));
  EXPECT_EQ(set.features.scalar_type(), torch::kFloat);
  EXPECT_EQ(set.num_skipped, 0);
  EXPECT_EQ(set.indices, (std::vector<size_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
  EXPECT_TRUE(tensors_close("labels", set.labels,
                            torch::tensor({0, 1, 2, 0, 1, 2, 0, 1, 2, 0}, torch::kLong), 0));

  std::vector<Example> all;
  for (size_t i = 0; i < 10; ++i) all.push_back(data.get(i, 0));
  encoder->eval();
  torch::NoGradGuard no_grad;
  auto whole = data.collate(all);
  auto expected = encoder->extract_features(whole.input, {}).x.mean(1);
  EXPECT_TRUE(tensors_close("features", set.features, expected, 1e-5));
}

// The encoder's output (eval mode, no grad) for the whole dataset in one batch.
EncoderOutput whole_dataset_output(EncoderImpl& encoder, const Dataset& data) {
  std::vector<Example> all;
  for (size_t i = 0; i < data.size(); ++i) all.push_back(data.get(i, 0));
  encoder.eval();
  torch::NoGradGuard no_grad;
  return encoder.extract_features(data.collate(all).input, {});
}

TEST(ExtractFeatures, ProbeLayerPoolsTheChosenTensor) {
  EXPECT_EQ(parse_probe_layer("final"), kFinalLayer);
  EXPECT_EQ(parse_probe_layer("0"), 0);
  EXPECT_EQ(parse_probe_layer("12"), 12);
  EXPECT_THROW(parse_probe_layer("last"), std::invalid_argument);
  EXPECT_THROW(parse_probe_layer("-1"), std::invalid_argument);
  // Past int64 a number must still be a usage error naming the item, not std::out_of_range.
  EXPECT_EQ(parse_probe_layer("000000000000000000007"), 7);
  EXPECT_THROW(parse_probe_layer("99999999999999999999"), std::invalid_argument);

  auto encoder = make_encoder();  // 2 layers
  auto data = make_dataset(5);
  const auto out = whole_dataset_output(*encoder, data);
  ASSERT_EQ(out.layer_results.size(), 2u);
  const std::vector<std::pair<int64_t, torch::Tensor>> expected{{kFinalLayer, out.x},
                                                                {0, out.local_features},
                                                                {1, out.layer_results[0]},
                                                                {2, out.layer_results[1]}};
  for (const auto& [layer, tensor] : expected) {
    const auto set = extract_features(*encoder, data, ExtractOptions().layers({layer}));
    EXPECT_TRUE(
        tensors_close("layer " + std::to_string(layer), set.features, tensor.mean(1), 1e-5));
  }
  // The layers differ, so a wrong choice cannot pass by accident.
  EXPECT_GT((out.layer_results[0] - out.layer_results[1]).abs().max().item<double>(), 1e-3);
  EXPECT_GT((out.x - out.local_features).abs().max().item<double>(), 1e-3);
  try {
    extract_features(*encoder, data, ExtractOptions().layers({3}));
    ADD_FAILURE() << "no error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("has 2 layers"), std::string::npos) << e.what();
  }
}

TEST(ExtractFeatures, ProbeLayerListConcatenatesPooledLayersInOrder) {
  EXPECT_EQ(parse_probe_layers("final"), std::vector<int64_t>{kFinalLayer});
  EXPECT_EQ(parse_probe_layers("2,1,final"), (std::vector<int64_t>{2, 1, kFinalLayer}));
  for (const std::string bad : {"", "1,", ",1", "1,,2", "1,1", "1,last"}) {
    EXPECT_THROW(parse_probe_layers(bad), std::invalid_argument) << bad;
  }
  EXPECT_EQ(describe_probe_layers({kFinalLayer}), "");
  EXPECT_EQ(describe_probe_layers({0}), "local features");
  EXPECT_EQ(describe_probe_layers({2}), "block 2");
  EXPECT_EQ(describe_probe_layers({1, 2, kFinalLayer}), "blocks 1+2+final concatenated");

  auto encoder = make_encoder();  // 2 layers
  auto data = make_dataset(5);
  const auto out = whole_dataset_output(*encoder, data);
  ASSERT_EQ(out.layer_results.size(), 2u);
  const auto set = extract_features(*encoder, data, ExtractOptions().layers({2, 0, 1}));
  const auto expected = torch::cat(
      {out.layer_results[1].mean(1), out.local_features.mean(1), out.layer_results[0].mean(1)}, 1);
  ASSERT_EQ(set.features.sizes(), expected.sizes());
  EXPECT_TRUE(tensors_close("blocks 2+0+1", set.features, expected, 1e-5));
}

TEST(PoolFeatures, GridAveragesTheFourQuadrantsOfTheSquarePatchGrid) {
  EXPECT_EQ(parse_pool_mode("grid"), PoolMode::kGrid);
  EXPECT_EQ(to_string(PoolMode::kGrid), "grid");
  // One CLS token then a 3 x 3 grid of 2-dim features, row-major; odd sides share the middle.
  auto x = torch::arange(2 * 10 * 2, torch::kFloat).reshape({2, 10, 2});
  EncoderOutput out;
  out.x = x;
  const auto pooled = pool_features(out, 1, PoolMode::kGrid);
  ASSERT_EQ(pooled.sizes(), (std::vector<int64_t>{2, 8}));
  const auto grid = x.slice(1, 1).reshape({2, 3, 3, 2});  // [B,row,col,D]
  const auto quadrant = [&](int64_t r0, int64_t c0) {
    return grid.slice(1, r0, r0 + 2).slice(2, c0, c0 + 2).mean({1, 2});  // [B,D]
  };
  const auto expected =
      torch::cat({quadrant(0, 0), quadrant(0, 1), quadrant(1, 0), quadrant(1, 1)}, 1);
  // Quadrant-major: [top-left D | top-right D | bottom-left D | bottom-right D].
  EXPECT_TRUE(tensors_close("grid", pooled, expected, 1e-6));
  out.x = torch::zeros({2, 1 + 8, 2});  // 8 positions: not a square
  EXPECT_THROW(pool_features(out, 1, PoolMode::kGrid), c10::Error);
}

TEST(ExtractFeatures, PaddedExampleEqualsItselfAlone) {
  auto encoder = make_encoder();
  auto data = make_dataset(3, {6, 3, 5});
  auto batched = extract_features(*encoder, data, ExtractOptions().batch_size(3));
  auto alone = extract_features(*encoder, data, ExtractOptions().batch_size(1));
  EXPECT_TRUE(tensors_close("padded vs alone", batched.features, alone.features, 1e-5));
}

TEST(ExtractFeatures, BadSamplesAreSkippedAndCounted) {
  auto encoder = make_encoder();
  // Batches of 3: [0,1,2] [3,4,5] [6,7,8] [9]; the third is entirely bad.
  auto data = make_dataset(10, {}, {1, 6, 7, 8});
  size_t last_done = 0;
  auto set = extract_features(
      *encoder, data,
      ExtractOptions().batch_size(3).progress([&](size_t done, size_t) { last_done = done; }));
  EXPECT_EQ(set.num_skipped, 4);
  EXPECT_EQ(last_done, 10u);
  EXPECT_EQ(set.indices, (std::vector<size_t>{0, 2, 3, 4, 5, 9}));
  EXPECT_EQ(set.features.size(0), 6);
  auto good = extract_features(*encoder, data, ExtractOptions().indices({0, 2, 3, 4, 5, 9}));
  EXPECT_EQ(good.num_skipped, 0);
  EXPECT_TRUE(tensors_close("kept rows", set.features, good.features, 1e-5));
}

TEST(ExtractFeatures, IndexSubsetAndLimit) {
  auto encoder = make_encoder();
  auto data = make_dataset(10);
  auto full = extract_features(*encoder, data);
  auto some = extract_features(*encoder, data, ExtractOptions().indices({9, 3, 4}).limit(2));
  EXPECT_EQ(some.indices, (std::vector<size_t>{9, 3}));
  EXPECT_TRUE(tensors_close("subset rows", some.features,
                            full.features.index_select(0, torch::tensor({9, 3})), 1e-5));
  auto first = extract_features(*encoder, data, ExtractOptions().limit(4));
  EXPECT_EQ(first.indices, (std::vector<size_t>{0, 1, 2, 3}));
  EXPECT_THROW(extract_features(*encoder, data, ExtractOptions().indices({10})), c10::Error);
}

// The same vectors read as blocks of documents: example i belongs to document documents[i].
class DocumentDataset : public VectorDataset {
 public:
  DocumentDataset(VectorDataset blocks, std::vector<int64_t> documents)
      : VectorDataset(std::move(blocks)), documents_(std::move(documents)) {}
  int64_t document(size_t index) const override { return documents_.at(index); }

 private:
  std::vector<int64_t> documents_;
};

TEST(ExtractFeatures, BlocksOfADocumentAreAveragedIntoOneRow) {
  auto encoder = make_encoder();
  auto blocks = make_dataset(7, {6, 3, 5, 4, 6, 2, 5});
  const auto per_block = extract_features(*encoder, blocks, ExtractOptions().batch_size(3));
  // Documents 4 (blocks 0-2), 9 (block 3), 2 (blocks 4-6); block 1 unreadable.
  DocumentDataset documents(make_dataset(7, {6, 3, 5, 4, 6, 2, 5}, {1}), {4, 4, 4, 9, 2, 2, 2});
  const auto set = extract_features(*encoder, documents, ExtractOptions().batch_size(3));
  ASSERT_EQ(set.features.size(0), 3);
  EXPECT_EQ(set.indices, (std::vector<size_t>{0, 3, 4}));  // each document's first block read
  EXPECT_EQ(set.num_skipped, 1);
  const auto& f = per_block.features;
  EXPECT_TRUE(tensors_close("document 4 = mean of blocks 0, 2", set.features[0],
                            (f[0] + f[2]) / 2, 1e-5));
  EXPECT_TRUE(tensors_close("document 9 = block 3", set.features[1], f[3], 1e-5));
  EXPECT_TRUE(tensors_close("document 2 = mean of blocks 4-6", set.features[2],
                            (f[4] + f[5] + f[6]) / 3, 1e-5));
  EXPECT_EQ(set.labels[1].item<int64_t>(), 3 % 3);
  // A limit counts documents, not blocks: two documents are blocks 0-3.
  const auto two = extract_features(*encoder, documents, ExtractOptions().limit(2));
  EXPECT_EQ(two.indices, (std::vector<size_t>{0, 3}));
  EXPECT_TRUE(tensors_close("limited rows", two.features, set.features.slice(0, 0, 2), 1e-5));
}

TEST(ExtractFeatures, RawFeaturizerAndCls) {
  auto data = make_dataset(5);
  auto raw = extract_features([](const Batch& b) { return b.input.source.flatten(1); }, data,
                              ExtractOptions().batch_size(2));
  ASSERT_EQ(raw.features.sizes(), (std::vector<int64_t>{5, 6 * 16}));
  EXPECT_TRUE(tensors_close("raw row 3", raw.features[3], data.get(3, 0).source.flatten(), 0));

  auto encoder = make_encoder();
  auto cls = extract_features(*encoder, data, ExtractOptions().pool(PoolMode::kFirst));
  torch::NoGradGuard no_grad;
  encoder->eval();
  auto one = encoder->extract_features(data.collate({data.get(2, 0)}).input, {}).x;
  EXPECT_TRUE(tensors_close("first position", cls.features[2], one[0][0], 1e-5));
}

TEST(ExtractFeatures, Bf16AutocastCloseToFp32) {
  auto encoder = make_encoder();
  auto data = make_dataset(6);
  auto fp32 = extract_features(*encoder, data);
  auto bf16 = extract_features(*encoder, data, ExtractOptions().bf16(true));
  EXPECT_EQ(bf16.features.scalar_type(), torch::kFloat);
  EXPECT_TRUE(tensors_close("bf16 vs fp32", bf16.features, fp32.features, 0.1));
  EXPECT_FALSE(nn::cpu_autocast_enabled());  // switched off again
}

}  // namespace
