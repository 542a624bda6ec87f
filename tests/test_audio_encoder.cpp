// The audio encoder: frame arithmetic, padding, the teacher's path, and Data2Vec on audio.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "data2vec/audio/encoder.h"
#include "data2vec/core/data2vec.h"
#include "support.h"

using namespace data2vec;
using namespace data2vec::audio;
using data2vec::testing::tensors_close;

namespace {

// The default conv geometry (so frame counts are the real ones) at a width of 16 channels.
AudioEncoderOptions small_options() {
  return AudioEncoderOptions()
      .conv_layers(default_conv_layers(16))
      .dim(32)
      .depth(3)
      .num_heads(4)
      .mlp_dim(64)
      .pos_conv_depth(2)
      .pos_conv_kernel(5)
      .pos_conv_groups(4);
}

// Two waveforms of 8000 and 5000 samples, the second padded with `pad_value`.
EncoderInput padded_batch(double pad_value) {
  torch::manual_seed(0);
  auto source = torch::randn({2, 8000});
  auto padding = torch::zeros({2, 8000}, torch::kBool);
  padding[1].slice(0, 5000).fill_(true);
  source[1].slice(0, 5000).fill_(pad_value);
  return {source, padding};
}

}  // namespace

TEST(AudioEncoder, FrameCountsMatchFormulaAndCnn) {
  torch::manual_seed(0);
  AudioEncoderImpl encoder(small_options());
  // 16000 samples -> 49 frames is wav2vec 2.0's well-known count; 400 is the receptive field.
  EXPECT_EQ(encoder.num_frames(16000), 49);
  EXPECT_EQ(encoder.num_frames(400), 1);
  EXPECT_EQ(encoder.num_frames(399), 0);
  EXPECT_EQ(conv_receptive_field(small_options().conv_layers()), 400);
  torch::NoGradGuard no_grad;
  for (const int64_t samples : {400, 401, 719, 720, 1039, 5000, 16000, 16321}) {
    // The closed form, layer by layer.
    int64_t expected = samples;
    for (const auto& [k, s] : std::vector<std::pair<int64_t, int64_t>>{
             {10, 5}, {3, 2}, {3, 2}, {3, 2}, {3, 2}, {2, 2}, {2, 2}}) {
      expected = (expected - k) / s + 1;
    }
    EXPECT_EQ(encoder.num_frames(samples), expected) << samples;
    const auto features = encoder.feature_extractor(torch::randn({1, samples}));
    EXPECT_EQ(features.size(2), expected) << samples << " samples through the CNN";
    EXPECT_EQ(encoder.frame_lengths(torch::tensor({samples})).item<int64_t>(), expected);
  }
}

// The conv front end channels last (Conv2d on [B,C,1,S] views) and the plain Conv1d twin: the
// same weights give the same features and the same gradient for every parameter and
// for the waveform, with and without conv bias, for lengths that leave a remainder at every
// stride; 5125, 12345 and 16000 samples make the first layers long enough to run as overlapping
// windows stacked along the batch (5125: exactly two windows, no tail).
TEST(AudioEncoder, ConvFrontEndChannelsLastMatchesConv1d) {
  // Absolute tolerance relative to the reference's largest entry (weight gradients sum over
  // every frame of the batch).
  const auto close = [](const std::string& label, const torch::Tensor& actual,
                        const torch::Tensor& expected) {
    return tensors_close(label, actual, expected,
                         1e-5 * std::max(1.0, expected.abs().max().item<double>()));
  };
  for (const bool bias : {false, true}) {
    torch::manual_seed(0);
    FeatureExtractorImpl fast(default_conv_layers(16), bias, /*channels_last=*/true);
    FeatureExtractorImpl plain(default_conv_layers(16), bias, /*channels_last=*/false);
    {
      torch::NoGradGuard no_grad;
      const auto source = fast.named_parameters();
      for (auto& item : plain.named_parameters()) item.value().copy_(source[item.key()]);
    }
    for (const int64_t samples : {400, 1039, 5000, 5125, 12345, 16000}) {
      const auto wave = torch::randn({2, samples});
      const auto wave_fast = wave.clone().requires_grad_(true);
      const auto wave_plain = wave.clone().requires_grad_(true);
      const auto y_fast = fast.forward(wave_fast);
      const auto y_plain = plain.forward(wave_plain);
      const std::string at = std::to_string(samples) + " samples, bias " + std::to_string(bias);
      EXPECT_TRUE(close(at + ": features", y_fast, y_plain));
      const auto grad = torch::randn_like(y_plain);
      fast.zero_grad();
      plain.zero_grad();
      y_fast.backward(grad);
      y_plain.backward(grad);
      EXPECT_TRUE(close(at + ": waveform gradient", wave_fast.grad(), wave_plain.grad()));
      const auto plain_params = plain.named_parameters();
      for (const auto& item : fast.named_parameters()) {
        EXPECT_TRUE(
            close(at + ": " + item.key(), item.value().grad(), plain_params[item.key()].grad()));
      }
    }
  }
}

TEST(AudioEncoder, FramePaddingMaskFromLengths) {
  AudioEncoderImpl encoder(small_options());
  auto padding = torch::zeros({3, 16000}, torch::kBool);
  padding[1].slice(0, 8000).fill_(true);
  padding[2].slice(0, 1000).fill_(true);
  const int64_t frames = encoder.num_frames(16000);
  const auto mask = encoder.frame_padding_mask(padding, frames);
  ASSERT_EQ(mask.sizes(), torch::IntArrayRef({3, frames}));
  const std::vector<int64_t> real{frames, encoder.num_frames(8000), encoder.num_frames(1000)};
  EXPECT_EQ(real[1], 24);
  EXPECT_EQ(real[2], 2);
  for (int64_t b = 0; b < 3; ++b) {
    EXPECT_EQ((~mask[b]).sum().item<int64_t>(), real[b]) << b;
    EXPECT_FALSE(mask[b].slice(0, 0, real[b]).any().item<bool>()) << b;
    EXPECT_TRUE(mask[b].slice(0, real[b]).all().item<bool>()) << b;
  }
  EXPECT_FALSE(encoder.frame_padding_mask(torch::Tensor(), frames).defined());
}

TEST(AudioEncoder, ShapesAndRegisteredNames) {
  auto encoder = make_audio_encoder(small_options());
  encoder->eval();
  const auto batch = padded_batch(0.0);
  const int64_t frames = encoder->num_frames(8000);
  auto gen = at::detail::createCPUGenerator(1);
  const auto masked = encoder->apply_mask(batch, gen);
  ASSERT_EQ(masked.mask.sizes(), torch::IntArrayRef({2, frames}));
  EXPECT_TRUE(torch::equal(masked.student.source, batch.source));
  const auto out = encoder->extract_features(masked.student, masked.mask);
  EXPECT_EQ(out.x.sizes(), torch::IntArrayRef({2, frames, 32}));
  EXPECT_EQ(out.local_features.sizes(), torch::IntArrayRef({2, frames, 32}));
  ASSERT_EQ(out.layer_results.size(), 3u);
  for (const auto& r : out.layer_results) EXPECT_EQ(r.sizes(), out.x.sizes());
  ASSERT_TRUE(out.padding_mask.defined());
  EXPECT_FALSE((masked.mask & out.padding_mask).any().item<bool>()) << "padding was masked";

  std::set<std::string> names;
  for (const auto& p : encoder->named_parameters()) names.insert(p.key());
  for (const std::string name :
       {"feature_extractor.conv_layers.0.conv.weight",
        "feature_extractor.conv_layers.6.layer_norm.bias", "feature_projection.layer_norm.weight",
        "feature_projection.projection.weight", "masked_spec_embed",
        "encoder.pos_conv_embed.layers.1.conv.weight", "encoder.pos_conv_embed.layers.1.conv.bias",
        "encoder.layer_norm.weight", "encoder.layers.2.attention.query.weight",
        "encoder.layers.2.attention.output.bias", "encoder.layers.2.layer_norm.weight",
        "encoder.layers.2.feed_forward.fc1.weight", "encoder.layers.2.final_layer_norm.bias"}) {
    EXPECT_TRUE(names.count(name)) << "missing parameter " << name;
  }
  EXPECT_FALSE(names.count("feature_extractor.conv_layers.0.conv.bias")) << "convs have no bias";
  // No layer-norm affine parameters in the positional convs.
  for (const auto& name : names) {
    EXPECT_EQ(name.find("pos_conv_embed.layers.0.layer_norm"), std::string::npos) << name;
  }
  for (const auto& prefix : encoder->ema_copied_prefixes()) {
    EXPECT_TRUE(std::any_of(names.begin(), names.end(),
                            [&](const std::string& n) { return n.rfind(prefix, 0) == 0; }))
        << "copied prefix " << prefix << " names no parameter";
  }
  EXPECT_EQ(hf_audio_name("encoder.layers.3.attention.query.weight"),
            "encoder.layers.3.attention.q_proj.weight");
  EXPECT_EQ(hf_audio_name("encoder.layers.3.attention.output.bias"),
            "encoder.layers.3.attention.out_proj.bias");
  EXPECT_EQ(hf_audio_name("encoder.layers.0.feed_forward.fc1.weight"),
            "encoder.layers.0.feed_forward.intermediate_dense.weight");
  EXPECT_EQ(hf_audio_name("encoder.layers.0.feed_forward.fc2.bias"),
            "encoder.layers.0.feed_forward.output_dense.bias");
  EXPECT_EQ(hf_audio_name("masked_spec_embed"), "masked_spec_embed");
}

TEST(AudioEncoder, MaskedFramesReadTheMaskEmbedding) {
  auto encoder = make_audio_encoder(small_options());
  encoder->eval();
  torch::NoGradGuard no_grad;
  const auto batch = padded_batch(0.0);
  auto gen = at::detail::createCPUGenerator(2);
  const auto masked = encoder->apply_mask(batch, gen);
  const auto out = encoder->extract_features(batch, masked.mask);
  // Reference: the contextualizer on the local features with masked frames replaced by hand.
  auto x = out.local_features.clone();
  x.index_put_({masked.mask}, encoder->masked_spec_embed);
  const auto expected = encoder->encoder(x, out.padding_mask);
  EXPECT_TRUE(tensors_close("student x", out.x, expected.x, 1e-5));
  // And the unmasked run differs at masked frames only through the contextualizer.
  const auto plain = encoder->extract_features(batch, torch::Tensor());
  EXPECT_TRUE(tensors_close("local features", plain.local_features, out.local_features, 0.0));
  EXPECT_FALSE(torch::allclose(plain.x, out.x));
}

TEST(AudioEncoder, RealFramesIgnorePaddedSamples) {
  auto encoder = make_audio_encoder(small_options());
  encoder->eval();
  torch::NoGradGuard no_grad;
  const auto a = encoder->extract_features(padded_batch(0.0), torch::Tensor());
  const auto b = encoder->extract_features(padded_batch(3.0), torch::Tensor());
  const auto real = ~a.padding_mask;  // [B,T]
  EXPECT_TRUE(tensors_close("local features at real frames", b.local_features.index({real}),
                            a.local_features.index({real}), 0.0));
  EXPECT_TRUE(tensors_close("x at real frames", b.x.index({real}), a.x.index({real}), 1e-5));
}

TEST(AudioEncoder, TeacherReadsTheStudentsLocalFeatures) {
  torch::manual_seed(1);
  auto student = make_audio_encoder(small_options());
  auto teacher = make_audio_encoder(small_options());  // different weights
  teacher->eval();
  const auto batch = padded_batch(0.0);
  auto gen = at::detail::createCPUGenerator(3);
  const auto masked = student->apply_mask(batch, gen);
  const auto student_out = student->extract_features(masked.student, masked.mask);
  ASSERT_TRUE(student_out.local_features.requires_grad());

  torch::NoGradGuard no_grad;
  const auto teacher_out = teacher->teacher_features(batch, student_out);
  const auto expected = teacher->encoder(student_out.local_features, student_out.padding_mask);
  ASSERT_EQ(teacher_out.layer_results.size(), expected.layer_results.size());
  for (size_t i = 0; i < expected.layer_results.size(); ++i) {
    EXPECT_TRUE(tensors_close("teacher layer " + std::to_string(i), teacher_out.layer_results[i],
                              expected.layer_results[i], 0.0));
  }
  EXPECT_FALSE(teacher_out.local_features.requires_grad());
  EXPECT_TRUE(torch::equal(teacher_out.padding_mask, student_out.padding_mask));
  // The waveform itself is never read by the teacher.
  EncoderInput garbage{torch::randn({2, 8000}) * 100, batch.padding_mask};
  const auto from_garbage = teacher->teacher_features(garbage, student_out);
  EXPECT_TRUE(tensors_close("teacher x", from_garbage.x, teacher_out.x, 0.0));
  // ... while its own CNN would give something else.
  const auto own = teacher->extract_features(batch, torch::Tensor());
  EXPECT_FALSE(torch::allclose(own.x, teacher_out.x));
}

TEST(AudioEncoder, LayerdropKeepsOneResultPerLayer) {
  torch::manual_seed(4);
  auto encoder = make_audio_encoder(small_options().depth(6).layerdrop(0.5));
  encoder->train();
  const auto batch = padded_batch(0.0);
  int zero_results = 0;
  for (int i = 0; i < 10; ++i) {
    const auto out = encoder->extract_features(batch, torch::Tensor());
    ASSERT_EQ(out.layer_results.size(), 6u);
    for (const auto& r : out.layer_results) zero_results += r.abs().sum().item<double>() == 0.0;
  }
  EXPECT_GT(zero_results, 0) << "layerdrop 0.5 over 60 layer runs dropped nothing";
  encoder->eval();
  torch::NoGradGuard no_grad;
  const auto a = encoder->extract_features(batch, torch::Tensor());
  const auto b = encoder->extract_features(batch, torch::Tensor());
  EXPECT_TRUE(tensors_close("eval is deterministic", a.x, b.x, 0.0));
}

TEST(AudioEncoder, Presets) {
  const auto base = audio_preset("base");
  EXPECT_EQ(base.dim(), 768);
  EXPECT_EQ(base.depth(), 12);
  EXPECT_EQ(base.num_heads(), 12);
  EXPECT_EQ(base.mlp_dim(), 3072);
  EXPECT_EQ(base.conv_layers().size(), 7u);
  EXPECT_EQ(base.conv_layers()[0].dim, 512);
  const auto tiny = audio_preset("tiny");
  EXPECT_EQ(tiny.dim(), 192);
  EXPECT_EQ(tiny.num_heads(), 3);
  EXPECT_EQ(tiny.mlp_dim(), 768);
  EXPECT_EQ(audio_preset("large").depth(), 24);
  EXPECT_THROW(audio_preset("huge"), c10::Error);
}

namespace {

Data2Vec make_audio_data2vec(TargetOptions targets) {
  return Data2Vec([] { return make_audio_encoder(small_options()); },
                  Data2VecOptions().targets(targets));
}

}  // namespace

TEST(AudioData2Vec, InstanceNormTargetsExcludePadding) {
  torch::manual_seed(5);
  auto model = make_audio_data2vec(TargetOptions().top_k_layers(2));
  model->eval();  // no dropout / layerdrop: two passes must agree exactly
  const auto batch = padded_batch(0.0);
  auto gen = at::detail::createCPUGenerator(6);
  const auto masked = model->student()->apply_mask(batch, gen);
  const auto out_a = model->forward_masked(batch, masked);
  // Changing the waveform only where it is padding changes nothing.
  const auto changed = padded_batch(5.0);
  const MaskedInput masked_changed{changed, masked.mask};
  const auto out_b = model->forward_masked(changed, masked_changed);
  EXPECT_TRUE(tensors_close("loss", out_b.loss, out_a.loss, 1e-6));
  EXPECT_TRUE(tensors_close("targets", out_b.targets, out_a.targets, 1e-5));

  // The targets of example 1 are instance-normalised over its real frames only.
  torch::NoGradGuard no_grad;
  const auto student_out = model->student()->extract_features(masked.student, masked.mask);
  const auto teacher_out = model->teacher()->teacher_features(batch, student_out);
  const auto targets = model->teacher_targets(batch, student_out);  // [B,T,D]
  const int64_t real = model->student()->as<AudioEncoderImpl>()->num_frames(5000);
  torch::Tensor expected;
  for (size_t i = teacher_out.layer_results.size() - 2; i < teacher_out.layer_results.size(); ++i) {
    const auto layer = teacher_out.layer_results[i][1].slice(0, 0, real);  // [T_real,D]
    const auto mean = layer.mean(0, true);
    const auto var = layer.var(0, /*unbiased=*/false, /*keepdim=*/true);
    const auto normed = (layer - mean) / torch::sqrt(var + 1e-5);
    expected = expected.defined() ? expected + normed : normed;
  }
  expected = expected / 2.0;
  EXPECT_TRUE(
      tensors_close("targets of the padded example", targets[1].slice(0, 0, real), expected, 1e-4));
  EXPECT_EQ(targets[1].slice(0, real).abs().sum().item<double>(), 0.0);
}

TEST(AudioData2Vec, ForwardBackwardFinite) {
  torch::manual_seed(7);
  auto model = make_audio_data2vec(TargetOptions().top_k_layers(3));
  model->train();
  const auto batch = padded_batch(0.0);
  auto gen = at::detail::createCPUGenerator(8);
  const auto out = model->forward(batch, gen);
  ASSERT_EQ(out.loss.dim(), 0);
  EXPECT_TRUE(std::isfinite(out.loss.item<double>()));
  EXPECT_GT(out.predictions.size(0), 0);
  EXPECT_GT(out.masked_frac.item<double>(), 0.2);
  out.loss.backward();
  int with_grad = 0;
  for (const auto& p : model->trainable_parameters()) {
    if (!p.grad().defined()) continue;
    ++with_grad;
    EXPECT_TRUE(torch::isfinite(p.grad()).all().item<bool>());
  }
  EXPECT_GT(with_grad, 10);
  // The CNN learns through the student only (the teacher reads detached features).
  EXPECT_TRUE(model->student()
                  ->named_parameters()["feature_extractor.conv_layers.0.conv.weight"]
                  .grad()
                  .defined());
  for (const auto& p : model->teacher()->parameters()) EXPECT_FALSE(p.grad().defined());
}
