// The RoBERTa-style text encoder: shapes, padding invariance, HF-like names, EMA prefixes, and one
// Data2Vec step on it.
#include "data2vec/core/data2vec.h"
#include "data2vec/text/encoder.h"
#include "support.h"

namespace {

using data2vec::EncoderInput;
using data2vec::text::make_text_encoder;
using data2vec::text::TextEncoderOptions;

constexpr int64_t kVocab = 60;

std::vector<int64_t> to_vector(const torch::Tensor& t) {
  const auto c = t.to(torch::kLong).contiguous();
  return {c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel()};
}

TextEncoderOptions small_options() {
  return TextEncoderOptions(kVocab).dim(32).depth(3).num_heads(2).mlp_dim(64).max_positions(24);
}

// Right-padded ids: <s> words </s> <pad>...; lengths include <s> and </s>.
EncoderInput make_batch(const std::vector<int64_t>& lengths, int64_t time, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  const auto b = static_cast<int64_t>(lengths.size());
  auto ids = torch::randint(5, kVocab, {b, time}, gen, torch::kLong);
  auto padding = torch::zeros({b, time}, torch::kBool);
  for (int64_t i = 0; i < b; ++i) {
    ids[i][0] = 0;
    ids[i][lengths[i] - 1] = 2;
    ids[i].slice(0, lengths[i]).fill_(1);
    padding[i].slice(0, lengths[i]).fill_(true);
  }
  return {ids, padding};
}

}  // namespace

TEST(TextEncoder, Shapes) {
  auto encoder = make_text_encoder(small_options());
  const auto batch = make_batch({10, 7, 4}, 10, 1);
  const auto out = encoder->extract_features(batch, {});
  EXPECT_EQ(out.x.sizes(), (std::vector<int64_t>{3, 10, 32}));
  ASSERT_EQ(static_cast<int64_t>(out.layer_results.size()), 3);
  EXPECT_EQ(encoder->num_layers(), 3);
  EXPECT_EQ(encoder->embed_dim(), 32);
  for (const auto& layer : out.layer_results) {
    EXPECT_EQ(layer.sizes(), (std::vector<int64_t>{3, 10, 32}));
  }
  EXPECT_EQ(out.local_features.sizes(), (std::vector<int64_t>{3, 10, 32}));
  EXPECT_TRUE(out.padding_mask.equal(batch.padding_mask));
}

TEST(TextEncoder, PaddedIdsDoNotChangeRealPositions) {
  auto encoder = make_text_encoder(small_options());
  encoder->eval();
  auto batch = make_batch({12, 5, 9}, 12, 2);
  auto other = batch;
  auto gen = at::detail::createCPUGenerator(3);
  other.source = torch::where(batch.padding_mask,
                              torch::randint(0, kVocab, batch.source.sizes(), gen, torch::kLong),
                              batch.source);
  ASSERT_FALSE(other.source.equal(batch.source));
  const auto a = encoder->extract_features(batch, {});
  const auto b = encoder->extract_features(other, {});
  const auto real = (~batch.padding_mask).unsqueeze(-1);  // [B,T,1]
  EXPECT_TRUE(data2vec::testing::tensors_close("x at real positions", a.x.masked_select(real),
                                               b.x.masked_select(real), 1e-5));
  for (size_t l = 0; l < a.layer_results.size(); ++l) {
    EXPECT_TRUE(data2vec::testing::tensors_close("layer " + std::to_string(l),
                                                 a.layer_results[l].masked_select(real),
                                                 b.layer_results[l].masked_select(real), 1e-5));
  }
  // A shorter batch without the padding gives the same outputs for row 1.
  const auto alone = encoder->extract_features(
      EncoderInput{batch.source.slice(0, 1, 2).slice(1, 0, 5), torch::Tensor()}, {});
  EXPECT_TRUE(data2vec::testing::tensors_close("row 1 without padding", alone.x[0],
                                               a.x[1].slice(0, 0, 5), 1e-5));
}

TEST(TextEncoder, LayerResultsAreFfnOutputs) {
  auto encoder = make_text_encoder(small_options());
  encoder->eval();
  const auto batch = make_batch({8, 8}, 8, 4);
  const auto out = encoder->extract_features(batch, {});
  // Recompute the last block by hand from its input (layer 2's input = layer 1's output).
  auto x = encoder->embeddings(batch.source);
  std::vector<torch::Tensor> ffn;
  for (auto& layer : encoder->layers) {
    auto block = layer->forward(x, {}, batch.padding_mask);
    ffn.push_back(block.ffn);
    x = block.x;
  }
  for (size_t l = 0; l < ffn.size(); ++l) {
    EXPECT_TRUE(data2vec::testing::tensors_close("ffn " + std::to_string(l), out.layer_results[l],
                                                 ffn[l], 1e-6));
  }
  EXPECT_TRUE(data2vec::testing::tensors_close("final output", out.x, x, 1e-6));

  auto block_encoder =
      make_text_encoder(small_options().layer_result(data2vec::LayerResultKind::kBlock));
  block_encoder->eval();
  const auto block_out = block_encoder->extract_features(batch, {});
  EXPECT_TRUE(block_out.layer_results.back().equal(block_out.x));
}

TEST(TextEncoder, ExtractFeaturesIgnoresTheMaskArgument) {
  auto encoder = make_text_encoder(small_options());
  encoder->eval();
  const auto batch = make_batch({9, 6}, 9, 5);
  const auto mask = torch::rand({2, 9}) < 0.5;
  const auto a = encoder->extract_features(batch, mask);
  const auto b = encoder->extract_features(batch, {});
  EXPECT_TRUE(a.x.equal(b.x));
}

TEST(TextEncoder, ApplyMaskSubstitutesIdsOnly) {
  auto encoder = make_text_encoder(small_options());
  const auto batch = make_batch({20, 11, 16}, 20, 6);
  auto gen = at::detail::createCPUGenerator(7);
  const auto masked = encoder->apply_mask(batch, gen);
  EXPECT_TRUE(masked.student.padding_mask.equal(batch.padding_mask));
  EXPECT_FALSE((masked.mask & batch.padding_mask).any().item<bool>());
  // 18, 9, 14 eligible words -> round(2.7)=3, round(1.35)=1, round(2.1)=2.
  EXPECT_EQ(to_vector(masked.mask.sum(1)), (std::vector<int64_t>{3, 1, 2}));
  EXPECT_TRUE(masked.student.source.masked_select(~masked.mask)
                  .equal(batch.source.masked_select(~masked.mask)));
}

TEST(TextEncoder, HuggingFaceLikeNamesAndEmaPrefixes) {
  auto encoder = make_text_encoder(small_options());
  const auto params = encoder->named_parameters();
  for (const std::string name :
       {"embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight",
        "embeddings.token_type_embeddings.weight", "embeddings.LayerNorm.weight",
        "embeddings.LayerNorm.bias", "encoder.layer.0.attention.query.weight",
        "encoder.layer.0.attention.key.bias", "encoder.layer.1.attention.value.weight",
        "encoder.layer.1.attention.output.weight", "encoder.layer.2.layer_norm.weight",
        "encoder.layer.2.feed_forward.fc1.weight", "encoder.layer.2.feed_forward.fc2.bias",
        "encoder.layer.2.final_layer_norm.bias"}) {
    EXPECT_TRUE(params.contains(name)) << name;
  }
  EXPECT_FALSE(params.contains("encoder.layer.3.layer_norm.weight"));
  EXPECT_EQ(params["embeddings.word_embeddings.weight"].sizes(),
            (std::vector<int64_t>{kVocab, 32}));
  EXPECT_EQ(params["embeddings.position_embeddings.weight"].sizes(),
            (std::vector<int64_t>{24, 32}));
  EXPECT_EQ(params["embeddings.token_type_embeddings.weight"].sizes(),
            (std::vector<int64_t>{1, 32}));
  EXPECT_TRUE((params["embeddings.word_embeddings.weight"][1] == 0).all().item<bool>())
      << "the <pad> row starts at zero";
  // Every parameter is either under the copied prefix or in the transformer layers.
  ASSERT_EQ(encoder->ema_copied_prefixes(), (std::vector<std::string>{"embeddings."}));
  for (const auto& item : params) {
    const bool copied = item.key().rfind("embeddings.", 0) == 0;
    const bool layer = item.key().rfind("encoder.layer.", 0) == 0;
    EXPECT_TRUE(copied != layer) << item.key();
  }
}

TEST(TextEncoder, Presets) {
  const auto tiny = data2vec::text::text_preset("tiny", 8000);
  EXPECT_EQ(tiny.depth(), 12);
  EXPECT_EQ(tiny.dim(), 192);
  EXPECT_EQ(tiny.mlp_dim(), 768);
  EXPECT_EQ(tiny.num_heads(), 3);
  EXPECT_EQ(tiny.vocab_size(), 8000);
  const auto base = data2vec::text::text_preset("base", 8000);
  EXPECT_EQ(base.depth(), 12);
  EXPECT_EQ(base.dim(), 768);
  EXPECT_EQ(base.mlp_dim(), 3072);
  EXPECT_EQ(base.num_heads(), 12);
  EXPECT_EQ(data2vec::text::text_preset("mini", 100).dim(), 128);
  EXPECT_THROW(data2vec::text::text_preset("huge", 8000), c10::Error);
}

TEST(TextEncoder, RejectsTooLongAndBadIds) {
  auto encoder = make_text_encoder(small_options());
  EXPECT_THROW(encoder->extract_features(make_batch({30}, 30, 8), {}), c10::Error);
  EXPECT_THROW(encoder->extract_features(EncoderInput{torch::zeros({1, 4}), {}}, {}), c10::Error);
}

TEST(TextEncoder, Data2VecStepIsFiniteAndEmaCopiesEmbeddings) {
  using namespace data2vec;
  const auto options = small_options();
  Data2Vec model(
      [options] { return make_text_encoder(options); },
      Data2VecOptions()
          .targets(TargetOptions().top_k_layers(2).layer_norm_targets(TargetNorm::kLayer))
          .loss(LossOptions().beta(4.0).scale(1.0))
          .head_hidden_mult(2)
          .ema(EmaOptions().decay_start(0.9).decay_end(0.9).anneal_steps(10)));
  model->train();
  auto optimizer =
      torch::optim::Adam(model->trainable_parameters(), torch::optim::AdamOptions(1e-2));
  const auto batch = make_batch({16, 12, 9, 16}, 16, 9);
  auto gen = at::detail::createCPUGenerator(10);
  const auto out = model->forward(batch, gen);
  ASSERT_EQ(out.loss.dim(), 0);
  EXPECT_TRUE(std::isfinite(out.loss.item<double>()));
  EXPECT_GT(out.loss.item<double>(), 0.0);
  EXPECT_EQ(out.predictions.size(0), out.mask.sum().item<int64_t>());
  EXPECT_EQ(out.predictions.size(1), 32);
  optimizer.zero_grad();
  out.loss.backward();
  for (const auto& p : model->trainable_parameters()) {
    if (p.grad().defined()) {
      EXPECT_TRUE(torch::isfinite(p.grad()).all().item<bool>());
    }
  }
  const auto head_grad = model->head()->parameters().front().grad();
  ASSERT_TRUE(head_grad.defined());
  EXPECT_GT(head_grad.abs().sum().item<double>(), 0.0);
  optimizer.step();
  model->ema_step(0);

  const auto student = model->student()->named_parameters();
  const auto teacher = model->teacher()->named_parameters();
  EXPECT_TRUE(teacher["embeddings.word_embeddings.weight"].equal(
      student["embeddings.word_embeddings.weight"]))
      << "embeddings are copied, not averaged";
  const auto name = "encoder.layer.0.feed_forward.fc1.weight";
  EXPECT_FALSE(teacher[name].equal(student[name])) << "transformer layers are averaged";
}
