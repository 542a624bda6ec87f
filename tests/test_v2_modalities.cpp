// data2vec 2.0 in each modality (data2vec 2.0, arXiv 2212.07525): the masks (exact counts, shapes,
// padding and CLS never masked, blocky kept regions), kept-only encoding equal to the full encoding
// when everything is kept, and one v2 training pass per modality with its decoder's shapes.
#include <gtest/gtest.h>

#include "data2vec/audio/encoder.h"
#include "data2vec/audio/masking.h"
#include "data2vec/core/data2vec.h"
#include "data2vec/core/masking.h"
#include "data2vec/text/encoder.h"
#include "data2vec/vision/encoder.h"
#include "data2vec/vision/masking.h"
#include "support.h"

namespace data2vec {
namespace {

using data2vec::testing::tensors_close;

at::Generator seeded(uint64_t seed) {
  return at::make_generator<at::CPUGeneratorImpl>(seed);
}

vision::VisionEncoderOptions small_vision() {
  return vision::VisionEncoderOptions()
      .image_size(28)
      .patch_size(4)
      .in_channels(1)
      .dim(32)
      .depth(2)
      .num_heads(4)
      .mlp_dim(64)
      .min_mask_patches(4)
      .mask_ratio(0.8)
      .layer_result(LayerResultKind::kFfn);
}

audio::AudioEncoderOptions small_audio() {
  return audio::AudioEncoderOptions()
      .conv_layers(audio::default_conv_layers(16))
      .dim(32)
      .depth(2)
      .num_heads(4)
      .mlp_dim(64)
      .pos_conv_depth(2)
      .pos_conv_kernel(5)
      .pos_conv_groups(4);
}

text::TextEncoderOptions small_text() {
  auto o = text::TextEncoderOptions(50).dim(32).depth(2).num_heads(2).mlp_dim(64).max_positions(24);
  o.masking().mask_prob(0.45);
  return o;
}

// Mean over kept patches of how many of their 4-neighbours are kept. kept [R, g*g] bool.
double mean_kept_neighbours(const torch::Tensor& kept, int64_t g) {
  const auto grid = kept.view({-1, g, g}).to(torch::kLong);
  const auto p = torch::constant_pad_nd(grid, {1, 1, 1, 1}, 0);
  const auto n = p.slice(1, 0, g).slice(2, 1, g + 1) + p.slice(1, 2, g + 2).slice(2, 1, g + 1) +
                 p.slice(1, 1, g + 1).slice(2, 0, g) + p.slice(1, 1, g + 1).slice(2, 2, g + 2);
  return (n * grid).sum().item<double>() / grid.sum().item<double>();
}

// ---- the decoder's GEMM library is the encoder's ----

TEST(V2Decoder, EachModalityHandsItsGemmLibraryToTheDecoder) {
  std::vector<nn::GemmLibrary> libraries{nn::GemmLibrary::kTorch};
  if (nn::have_onednn_gemm()) libraries.push_back(nn::GemmLibrary::kOneDnn);
  for (const auto library : libraries) {
    const auto name = nn::to_string(library);
    EXPECT_EQ(vision::VisionEncoder(small_vision().gemm(library))->default_decoder_options().gemm(),
              library)
        << name;
    EXPECT_EQ(audio::AudioEncoder(small_audio().gemm(library))->default_decoder_options().gemm(),
              library)
        << name;
    EXPECT_EQ(text::TextEncoder(small_text().gemm(library))->default_decoder_options().gemm(),
              library)
        << name;
  }
}

// ---- masks ----

TEST(V2Masks, InverseBlockMaskKeepsAnExactCount) {
  EXPECT_EQ(vision::inverse_block_keep_count(196, 0.8), 39);  // 39.2
  EXPECT_EQ(vision::inverse_block_keep_count(49, 0.8), 10);   // 9.8
  EXPECT_EQ(vision::inverse_block_keep_count(49, 0.99), 1);
  for (const auto& [g, ratio] : std::vector<std::pair<int64_t, double>>{
           {7, 0.8}, {14, 0.8}, {14, 0.6}, {5, 0.5}, {16, 0.9}}) {
    auto gen = seeded(uint64_t(g) * 31);
    const auto mask = vision::inverse_block_mask(
        64, g, g, vision::InverseBlockMaskOptions().mask_ratio(ratio), gen);  // [64,g*g]
    ASSERT_EQ(mask.sizes(), torch::IntArrayRef({64, g * g}));
    const auto kept = (~mask).sum(1);
    EXPECT_TRUE((kept == vision::inverse_block_keep_count(g * g, ratio)).all().item<bool>())
        << g << "x" << g << " ratio " << ratio << ": kept counts " << kept.slice(0, 0, 8);
  }
}

TEST(V2Masks, InverseBlockMaskKeepsBlocksNotScatteredPatches) {
  auto gen = seeded(5);
  const auto mask = vision::inverse_block_mask(256, 14, 14, vision::InverseBlockMaskOptions(), gen);
  // Scattered 20% would give ~0.8 kept neighbours per kept patch; 3x3 blocks give ~2.5.
  EXPECT_GT(mean_kept_neighbours(~mask, 14), 1.8);
  // Pure function of the generator state; rows differ.
  auto again = seeded(5);
  EXPECT_TRUE(torch::equal(
      mask, vision::inverse_block_mask(256, 14, 14, vision::InverseBlockMaskOptions(), again)));
  EXPECT_FALSE(torch::equal(mask[0], mask[1]));
}

TEST(V2Masks, OneDimensionalBlocksMaskAnExactCountInsideRealFrames) {
  auto gen = seeded(3);
  const auto lengths = torch::tensor({100, 80, 100, 61}, torch::kLong);
  const auto mask = audio::block_mask_1d(lengths, 100, audio::BlockMask1dOptions(), gen);
  const auto padding = torch::arange(100).unsqueeze(0) >= lengths.unsqueeze(1);
  // round(0.5 x each row's own length), 30.5 -> 31; every row keeps 50 frames, the short rows
  // their first padded frames among them, the rest of their padding dropped.
  EXPECT_TRUE(torch::equal((mask & ~padding).sum(1), torch::tensor({50, 40, 50, 31}, torch::kLong)))
      << (mask & ~padding).sum(1);
  EXPECT_TRUE(((~mask).sum(1) == 50).all().item<bool>()) << (~mask).sum(1);
  EXPECT_FALSE(mask[1].slice(0, 80, 90).any().item<bool>());  // 40 real + 10 padded kept
  EXPECT_TRUE(mask[1].slice(0, 90).all().item<bool>());
  // Blocks: runs of masked real frames average well above one frame.
  const auto real = mask & ~padding;
  const auto starts = (real.slice(1, 1) & ~real.slice(1, 0, -1)).sum() + real.select(1, 0).sum();
  EXPECT_GT(double(real.sum().item<int64_t>()) / starts.item<double>(), 3.0);
}

TEST(V2Masks, SameKeptCountRandomMaskDropsOnlyPadding) {
  auto gen = seeded(4);
  auto padding = torch::zeros({3, 20}, torch::kBool);
  padding[1].slice(0, 12).fill_(true);
  const auto mask = random_mask_same_count(3, 20, 0.45, padding, gen);
  // 9 of 20 and 5 of 12 real positions masked (round(0.45 x length)); 11 kept in every row.
  EXPECT_TRUE(torch::equal((mask & ~padding).sum(1), torch::tensor({9, 5, 9}, torch::kLong)))
      << (mask & ~padding).sum(1);
  EXPECT_TRUE(((~mask).sum(1) == 11).all().item<bool>()) << (~mask).sum(1);
  EXPECT_FALSE(mask[1].slice(0, 12, 16).any().item<bool>());  // 7 real + 4 padded kept
  EXPECT_TRUE(mask[1].slice(0, 16).all().item<bool>());
}

// Masked real positions per row / that row's real length: each row near `ratio`, whatever the
// other rows' lengths. padding [R,T] (true = padding).
void expect_each_row_masks_its_own_share(const torch::Tensor& mask, const torch::Tensor& padding,
                                         double ratio, const std::string& label) {
  const auto masked_real = (mask & ~padding).sum(1).to(torch::kDouble);
  const auto real = (~padding).sum(1).to(torch::kDouble);
  for (int64_t r = 0; r < mask.size(0); ++r) {
    const double length = real[r].item<double>();
    EXPECT_NEAR(masked_real[r].item<double>() / length, ratio, 0.5 / length + 1e-9)
        << label << " row " << r << " of " << length << " real positions masks "
        << masked_real[r].item<double>();
  }
  // And the kept positions still gather into a rectangle.
  const auto kept = (~mask).sum(1);
  EXPECT_TRUE((kept == kept[0]).all().item<bool>()) << label << ": kept counts " << kept;
}

TEST(V2Masks, AShortRowDoesNotCutTheMaskingOfTheBatch) {
  // One short row (5 of 20 real) among full ones: every row masks its own share.
  auto padding = torch::zeros({3, 20}, torch::kBool);
  padding[1].slice(0, 12).fill_(true);
  padding[2].slice(0, 5).fill_(true);
  auto gen = seeded(6);
  expect_each_row_masks_its_own_share(random_mask_same_count(3, 20, 0.45, padding, gen), padding,
                                      0.45, "random");
  const auto lengths = torch::tensor({100, 80, 12}, torch::kLong);
  const auto frame_padding = torch::arange(100).unsqueeze(0) >= lengths.unsqueeze(1);
  expect_each_row_masks_its_own_share(
      audio::block_mask_1d(lengths, 100, audio::BlockMask1dOptions(), gen), frame_padding, 0.5,
      "1-D blocks");
}

TEST(V2Masks, EachModalityMasksCopiesIndependentlyWithEqualCounts) {
  torch::manual_seed(0);
  auto gen = seeded(8);
  vision::VisionEncoderImpl vision_encoder(small_vision());
  const auto vm = vision_encoder.v2_mask(EncoderInput{torch::randn({2, 1, 28, 28}), {}}, 3, gen);
  ASSERT_EQ(vm.sizes(), torch::IntArrayRef({6, 50}));
  EXPECT_FALSE(vm.select(1, 0).any().item<bool>()) << "CLS masked";
  EXPECT_TRUE(((~vm).sum(1) == 1 + 10).all().item<bool>());
  EXPECT_FALSE(torch::equal(vm[0], vm[1]));

  text::TextEncoderImpl text_encoder(small_text());
  auto padding = torch::zeros({2, 20}, torch::kBool);
  padding[1].slice(0, 15).fill_(true);
  const auto tm = text_encoder.v2_mask(
      EncoderInput{torch::randint(5, 50, {2, 20}, torch::kLong), padding}, 4, gen);
  ASSERT_EQ(tm.sizes(), torch::IntArrayRef({8, 20}));
  const auto copies_padding = padding.repeat_interleave(4, 0);
  EXPECT_TRUE(torch::equal((tm & ~copies_padding).sum(1),
                           torch::tensor({9, 9, 9, 9, 7, 7, 7, 7}, torch::kLong)))
      << (tm & ~copies_padding).sum(1);  // round(0.45 x 20), round(0.45 x 15)
  EXPECT_TRUE(((~tm).sum(1) == 11).all().item<bool>()) << (~tm).sum(1);

  audio::AudioEncoderImpl audio_encoder(small_audio());
  const auto am = audio_encoder.v2_mask(EncoderInput{torch::randn({2, 8000}), {}}, 2, gen);
  ASSERT_EQ(am.sizes(), torch::IntArrayRef({4, audio_encoder.num_frames(8000)}));
  EXPECT_TRUE((am.sum(1) == int64_t(std::llround(0.5 * double(am.size(1))))).all().item<bool>());
}

// ---- kept-only encoding ----

TEST(V2KeptEncoding, EveryPositionKeptEqualsTheFullEncodingInEachModality) {
  torch::manual_seed(0);
  {
    vision::VisionEncoderImpl encoder(small_vision());
    encoder.eval();
    torch::NoGradGuard no_grad;
    // Non-zero position tables, so a wrongly gathered bias would show.
    encoder.encoder->position_biases[0]->relative_position_bias_table.normal_();
    const EncoderInput batch{torch::randn({2, 1, 28, 28}), {}};
    const auto ids = torch::arange(50).repeat({4, 1});
    const auto kept = encoder.extract_kept_features(batch, ids, 2).x;  // [4,50,D]
    const auto full = encoder.extract_features(batch, {}).x;
    EXPECT_TRUE(tensors_close("vision", kept.index({torch::tensor({0, 2})}), full, 1e-4));
    // A subset: the gathered bias equals the full bias at the kept rows and columns.
    const auto sub = torch::tensor({0, 3, 7, 20, 49}, torch::kLong).unsqueeze(0);
    auto bias = encoder.encoder->position_biases[0];
    const auto gathered = bias->forward_kept(sub)[0];  // [Hd,5,5]
    const auto index = sub[0];
    EXPECT_TRUE(
        torch::equal(gathered, bias->forward().index_select(1, index).index_select(2, index)));
  }
  {
    text::TextEncoderImpl encoder(small_text());
    encoder.eval();
    torch::NoGradGuard no_grad;
    auto padding = torch::zeros({2, 12}, torch::kBool);
    padding[1].slice(0, 9).fill_(true);
    const EncoderInput batch{torch::randint(5, 50, {2, 12}, torch::kLong), padding};
    const auto kept = encoder.extract_kept_features(batch, torch::arange(12).repeat({2, 1}), 1);
    const auto full = encoder.extract_features(batch, {});
    const auto real = ~padding.unsqueeze(-1);
    EXPECT_TRUE(tensors_close("text", kept.x * real, full.x * real, 1e-4));
    EXPECT_TRUE(torch::equal(kept.padding_mask, padding));
  }
  {
    audio::AudioEncoderImpl encoder(small_audio());
    encoder.eval();
    torch::NoGradGuard no_grad;
    const EncoderInput batch{torch::randn({2, 8000}), {}};
    const auto t = encoder.num_frames(8000);
    const auto kept = encoder.extract_kept_features(batch, torch::arange(t).repeat({2, 1}), 1);
    const auto full = encoder.extract_features(batch, {});
    EXPECT_TRUE(tensors_close("audio", kept.x, full.x, 1e-4));
    EXPECT_TRUE(tensors_close("audio local", kept.local_features, full.local_features, 0));
  }
}

TEST(V2KeptEncoding, AudioKeptFramesDoNotSeeTheMaskedOnes) {
  // fairseq runs the positional convolution on each copy with its masked frames zeroed
  // (encoder_zero_mask): a kept frame's output must not depend on what the masked frames hold.
  torch::manual_seed(0);
  audio::AudioEncoderImpl encoder(small_audio());
  encoder.eval();
  torch::NoGradGuard no_grad;
  const int64_t t = 30;
  const auto x = torch::randn({1, t, 32});
  // Copy 0 keeps the even frames, copy 1 the first half.
  const auto ids = torch::stack({torch::arange(0, t, 2), torch::arange(0, t / 2)});  // [2,15]
  const auto before = encoder.encoder->forward_kept(x, {}, ids, 2).x;                // [2,15,D]
  auto changed = x.clone();
  changed.slice(1, 1, t, 2) += 10.0 * torch::randn({1, t / 2, 32});  // copy 0's masked frames
  const auto after = encoder.encoder->forward_kept(changed, {}, ids, 2).x;
  EXPECT_TRUE(tensors_close("copy 0, its masked frames changed", after[0], before[0], 1e-5));
  // Copy 1 keeps some of those frames: its output must move.
  EXPECT_GT((after[1] - before[1]).abs().max().item<double>(), 1e-3);
}

// ---- one v2 pass per modality ----

Data2VecOptions v2(int64_t top_k, TargetNorm final_norm, double cls) {
  return Data2VecOptions()
      .algorithm(Algorithm::kV2)
      .clone_batch(3)
      .decoder_dim(16)
      .decoder_layers(2)
      .decoder_groups(4)
      .cls_loss_weight(cls)
      .targets(TargetOptions()
                   .top_k_layers(top_k)
                   .layer_norm_targets(TargetNorm::kInstance)
                   .final_norm(final_norm));
}

TEST(V2Pass, VisionDecodesTheGridAndAddsTheClsLoss) {
  torch::manual_seed(0);
  Data2Vec model([] { return vision::make_vision_encoder(small_vision()); },
                 v2(2, TargetNorm::kLayer, 0.01));
  EXPECT_EQ(model->decoder()->options().grid(), std::vector<int64_t>({7, 7}));
  EXPECT_EQ(model->decoder()->options().kernel(), 3);
  auto gen = seeded(1);
  const EncoderInput batch{torch::randn({2, 1, 28, 28}), {}};
  const auto masked = model->apply_mask(batch, gen);
  const auto out = model->forward_masked(batch, masked);
  EXPECT_EQ(out.predictions.sizes(), torch::IntArrayRef({2 * 3 * 39, 32}));
  ASSERT_TRUE(out.cls_loss.defined());
  EXPECT_GT(out.cls_loss.item<double>(), 0.0);
  EXPECT_NEAR(
      out.loss.item<double>(),
      regression_loss(out.predictions, out.targets, model->options().loss()).item<double>() +
          0.01 * 2 * 3 * out.cls_loss.item<double>(),  // summed over the 2 x 3 rows
      1e-4);
  out.loss.backward();
  EXPECT_GT(model->student()
                ->named_parameters()["embeddings.cls_token"]
                .grad()
                .abs()
                .sum()
                .item<double>(),
            0.0);
}

TEST(V2Pass, ClsLossIsSummedOverTheRowsAsFairseq) {
  // fairseq data2vec2.py adds cls_loss x sample_size x (the per-row CLS loss, summed over the
  // B*M rows) and the criterion divides everything by sample_size: the CLS term is 0.01 x the SUM
  // over rows, while the patch term is a mean over masked patches.
  torch::manual_seed(0);
  Data2Vec model([] { return vision::make_vision_encoder(small_vision()); },
                 v2(2, TargetNorm::kLayer, 0.01));
  model->eval();  // no dropout: the student's CLS below is the one of the pass
  auto gen = seeded(4);
  const EncoderInput batch{torch::randn({2, 1, 28, 28}), {}};
  const auto out = model->forward_masked(batch, model->apply_mask(batch, gen));

  torch::NoGradGuard no_grad;
  const auto student =
      model->student()->extract_kept_features(batch, keep_indices(out.mask), 3);  // [6,1+10,D]
  std::vector<torch::Tensor> patch_layers;
  for (const auto& layer : model->teacher()->extract_features(batch, {}).layer_results)
    patch_layers.push_back(layer.slice(1, 1));  // without the CLS
  const auto cls_targets = build_targets(patch_layers, {}, model->options().targets())
                               .mean(1)
                               .repeat_interleave(3, 0);  // [6,D]
  double cls_sum = 0;
  for (int64_t r = 0; r < 6; ++r) {
    cls_sum += regression_loss(student.x[r].slice(0, 0, 1), cls_targets.slice(0, r, r + 1),
                               model->options().loss())
                   .item<double>();
  }
  const double patches =
      regression_loss(out.predictions, out.targets, model->options().loss()).item<double>();
  EXPECT_NEAR(out.loss.item<double>(), patches + 0.01 * cls_sum, 1e-4 * (1 + cls_sum));
}

TEST(V2Pass, TextDecoderEndsInTwoLinearLayersAsFairseq) {
  // fairseq's text recipe (config/v2/base_text_only_task.yaml): projection_layers 2, ratio 2.0,
  // so Decoder1d's proj is Linear(Dd, 2 Dd) -> GELU -> Linear(2 Dd, D). Images and audio keep one
  // Linear (registered as proj.weight, as their checkpoints hold it).
  torch::manual_seed(0);
  Data2Vec text_model([] { return text::make_text_encoder(small_text()); },
                      v2(2, TargetNorm::kNone, 0.0));
  const auto text_params = text_model->decoder()->named_parameters();
  ASSERT_TRUE(text_params.contains("proj.0.weight")) << "text decoder: one Linear";
  EXPECT_EQ(text_params["proj.0.weight"].sizes(), torch::IntArrayRef({32, 16}));
  EXPECT_EQ(text_params["proj.2.weight"].sizes(), torch::IntArrayRef({32, 32}));
  auto padding = torch::zeros({2, 16}, torch::kBool);
  padding[0].slice(0, 11).fill_(true);
  auto gen = seeded(2);
  text_model->forward(EncoderInput{torch::randint(5, 50, {2, 16}, torch::kLong), padding}, gen)
      .loss.backward();
  EXPECT_GT(text_params["proj.0.weight"].grad().abs().sum().item<double>(), 0.0);

  Data2Vec audio_model([] { return audio::make_audio_encoder(small_audio()); },
                       v2(2, TargetNorm::kNone, 0.0));
  EXPECT_TRUE(audio_model->decoder()->named_parameters().contains("proj.weight"));
}

TEST(V2Pass, TextAndAudioTrainWithPadding) {
  torch::manual_seed(0);
  {
    Data2Vec model([] { return text::make_text_encoder(small_text()); },
                   v2(2, TargetNorm::kNone, 0.0));
    EXPECT_EQ(model->decoder()->options().kernel(), 9);
    EXPECT_FALSE(model->decoder()->options().residual());
    auto padding = torch::zeros({2, 16}, torch::kBool);
    padding[0].slice(0, 11).fill_(true);
    auto gen = seeded(2);
    const auto out =
        model->forward(EncoderInput{torch::randint(5, 50, {2, 16}, torch::kLong), padding}, gen);
    EXPECT_EQ(out.predictions.size(0), 3 * (5 + 7));  // round(0.45 x 11), round(0.45 x 16)
    EXPECT_FALSE(out.cls_loss.defined());
    out.loss.backward();
  }
  {
    Data2Vec model([] { return audio::make_audio_encoder(small_audio()); },
                   v2(2, TargetNorm::kNone, 0.0));
    EXPECT_EQ(model->decoder()->options().kernel(), 7);
    auto source = torch::randn({2, 8000});
    auto padding = torch::zeros({2, 8000}, torch::kBool);
    padding[1].slice(0, 5000).fill_(true);
    auto gen = seeded(3);
    const auto out = model->forward(EncoderInput{source, padding}, gen);
    const auto* encoder = model->student()->as<audio::AudioEncoderImpl>();
    const auto real_frames = encoder->num_frames(5000), frames = encoder->num_frames(8000);
    EXPECT_EQ(out.predictions.size(0),
              3 * (std::llround(0.5 * double(frames)) + std::llround(0.5 * double(real_frames))));
    EXPECT_TRUE(std::isfinite(out.loss.item<double>()));
    out.loss.backward();
  }
}

}  // namespace
}  // namespace data2vec
