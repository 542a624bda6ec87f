// The BEiT-style vision encoder: presets, names, relative position bias, masking by the mask
// token, layer results, and a Data2Vec step on it.
#include <gtest/gtest.h>

#include "data2vec/core/data2vec.h"
#include "data2vec/train/device.h"
#include "data2vec/vision/encoder.h"
#include "support.h"

using data2vec::EncoderInput;
using data2vec::LayerResultKind;
using data2vec::testing::tensors_close;
using data2vec::vision::make_vision_encoder;
using data2vec::vision::vision_preset;
using data2vec::vision::VisionEncoderOptions;

namespace {

// A small encoder for the behaviour tests: 16x16 images, patch 4 (4x4 grid), 2 layers.
VisionEncoderOptions small_options() {
  return VisionEncoderOptions()
      .image_size(16)
      .patch_size(4)
      .in_channels(3)
      .dim(32)
      .depth(2)
      .num_heads(4)
      .mlp_dim(64)
      .min_mask_patches(2);
}

EncoderInput images(int64_t b, const VisionEncoderOptions& o) {
  return {torch::randn({b, o.in_channels(), o.image_size(), o.image_size()}), torch::Tensor()};
}

std::map<std::string, torch::Tensor> named(const torch::nn::Module& m) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& p : m.named_parameters()) out[p.key()] = p.value();
  for (const auto& b : m.named_buffers()) out[b.key()] = b.value();
  return out;
}

}  // namespace

TEST(VisionEncoder, PresetSizes) {
  struct Expected {
    const char* name;
    int64_t depth, dim, mlp, heads;
  };
  for (const auto& e : {Expected{"tiny", 12, 192, 768, 3}, Expected{"small", 12, 384, 1536, 6},
                        Expected{"base", 12, 768, 3072, 12}, Expected{"large", 24, 1024, 4096, 16},
                        Expected{"fmnist-tiny", 6, 192, 768, 3}}) {
    auto o = vision_preset(e.name);
    EXPECT_EQ(o.depth(), e.depth) << e.name;
    EXPECT_EQ(o.dim(), e.dim) << e.name;
    EXPECT_EQ(o.mlp_dim(), e.mlp) << e.name;
    EXPECT_EQ(o.num_heads(), e.heads) << e.name;
    // Run each width at a small size: 1 layer, 32x32 images (2x2 grid at patch 16).
    o.depth(1).min_mask_patches(1);
    if (o.patch_size() == 16) o.image_size(32);
    auto encoder = make_vision_encoder(o);
    const auto out = encoder->extract_features(images(2, o), torch::Tensor());
    const int64_t t = 1 + o.num_patches();
    EXPECT_EQ(out.x.sizes(), (std::vector<int64_t>{2, t, e.dim})) << e.name;
    EXPECT_EQ(out.layer_results.size(), 1u);
  }
  const auto fm = vision_preset("fmnist-tiny");
  EXPECT_EQ(fm.image_size(), 28);
  EXPECT_EQ(fm.patch_size(), 4);
  EXPECT_EQ(fm.in_channels(), 1);
  EXPECT_EQ(fm.num_patches(), 49);
  EXPECT_EQ(fm.min_mask_patches(), 4);
}

TEST(VisionEncoder, UnknownPresetListsNames) {
  try {
    vision_preset("huge");
    FAIL() << "expected an error";
  } catch (const c10::Error& e) {
    const std::string what = e.what();
    for (const char* name : {"huge", "tiny", "small", "base", "large", "fmnist-tiny"}) {
      EXPECT_NE(what.find(name), std::string::npos) << what;
    }
  }
}

TEST(VisionEncoder, ParameterNamesFollowHuggingFace) {
  const auto o = small_options();
  auto encoder = make_vision_encoder(o);
  const auto p = named(*encoder);
  const int64_t d = o.dim(), table_rows = (2 * 4 - 1) * (2 * 4 - 1) + 3;
  auto expect_shape = [&](const std::string& name, std::vector<int64_t> shape) {
    ASSERT_TRUE(p.count(name)) << "missing " << name;
    EXPECT_EQ(p.at(name).sizes(), shape) << name;
  };
  expect_shape("embeddings.cls_token", {1, 1, d});
  expect_shape("embeddings.mask_token", {1, 1, d});
  expect_shape("embeddings.patch_embeddings.projection.weight", {d, 3, 4, 4});
  expect_shape("embeddings.patch_embeddings.projection.bias", {d});
  expect_shape("encoder.relative_position_bias.relative_position_bias_table", {table_rows, 4});
  expect_shape("encoder.relative_position_bias.relative_position_index", {17, 17});
  for (const char* layer : {"encoder.layer.0.", "encoder.layer.1."}) {
    const std::string l = layer;
    for (const char* sub :
         {"layernorm_before.weight", "layernorm_before.bias", "attention.query.weight",
          "attention.query.bias", "attention.key.weight", "attention.value.weight",
          "attention.value.bias", "attention.output.weight", "attention.output.bias",
          "layernorm_after.weight", "feed_forward.fc1.weight", "feed_forward.fc2.weight"}) {
      EXPECT_TRUE(p.count(l + sub)) << "missing " << l + sub;
    }
    expect_shape(l + "lambda_1", {d});
    expect_shape(l + "lambda_2", {d});
    EXPECT_FALSE(p.count(l + "attention.key.bias")) << "BEiT has no key bias";
    EXPECT_TRUE(tensors_close(l + "lambda_1", p.at(l + "lambda_1"), torch::full({d}, 0.1), 0));
  }
  expect_shape("layernorm.weight", {d});
  // The shared table is registered once, not once per layer.
  for (const auto& [name, tensor] : p) {
    EXPECT_EQ(name.find("layer_relative_position_bias"), std::string::npos) << name;
  }
  // Per-layer tables when not shared.
  auto per_layer = make_vision_encoder(
      small_options().shared_relative_position_bias(false).layer_relative_position_bias(true));
  const auto q = named(*per_layer);
  EXPECT_TRUE(q.count("encoder.layer_relative_position_bias.0.relative_position_bias_table"));
  EXPECT_TRUE(q.count("encoder.layer_relative_position_bias.1.relative_position_bias_table"));
  EXPECT_FALSE(q.count("encoder.relative_position_bias.relative_position_bias_table"));
}

TEST(VisionEncoder, InitFollowsBeit) {
  auto encoder = make_vision_encoder(small_options().dim(64).mlp_dim(256));
  const auto p = named(*encoder);
  const auto& w = p.at("encoder.layer.0.attention.query.weight");
  // fairseq's nn.init.trunc_normal_(std=0.02) cuts at the absolute range [-2, 2], i.e. never:
  // the std is 0.02 (a cut at +-2 std would give 0.88 x 0.02) and about 4.6% of the 4096
  // weights lie beyond 2 std.
  EXPECT_NEAR(w.std().item<double>(), 0.02, 0.001);
  EXPECT_GT(w.abs().max().item<double>(), 0.04);
  EXPECT_GT((w.abs() > 0.04).sum().item<int64_t>(), 100);
  EXPECT_LE(w.abs().max().item<double>(), 2.0);
  EXPECT_EQ(p.at("encoder.layer.0.attention.query.bias").abs().max().item<double>(), 0.0);
  EXPECT_EQ(p.at("encoder.relative_position_bias.relative_position_bias_table")
                .abs()
                .max()
                .item<double>(),
            0.0);
  // Residual projections of layer 2 (1-based) are scaled by 1/sqrt(4).
  const double fc2_l1 = p.at("encoder.layer.0.feed_forward.fc2.weight").std().item<double>();
  const double fc2_l2 = p.at("encoder.layer.1.feed_forward.fc2.weight").std().item<double>();
  EXPECT_NEAR(fc2_l2 / fc2_l1, std::sqrt(2.0 / 4.0), 0.05);
  // The mask token is N(0, 0.02^2) too: the std of its 64 draws lies within 4 standard errors
  // (0.02 / sqrt(2 x 64) = 0.0018) of 0.02, whatever the draw (a pinned draw, 0.0176, failed
  // once in `make test` at 0.0246).
  EXPECT_NEAR(p.at("embeddings.mask_token").std().item<double>(), 0.02,
              4 * 0.02 / std::sqrt(128.0));
}

TEST(VisionEncoder, RelativePositionIndexMatchesBeitPython) {
  // Generated by BEiT's RelativePositionBias.__init__ (torch, window_size = (2, 3)):
  //   coords = stack(meshgrid(arange(2), arange(3))); flat = coords.flatten(1)
  //   rel = (flat[:, :, None] - flat[:, None, :]).permute(1, 2, 0); rel[..., 0] += 1
  //   rel[..., 1] += 2; rel[..., 0] *= 5; idx[1:, 1:] = rel.sum(-1); idx[0, :] = 15;
  //   idx[:, 0] = 16; idx[0, 0] = 17
  const auto expected =
      torch::tensor({17, 15, 15, 15, 15, 15, 15, 16, 7,  6,  5,  2,  1,  0,  16, 8, 7,
                     6,  3,  2,  1,  16, 9,  8,  7,  4,  3,  2,  16, 12, 11, 10, 7, 6,
                     5,  16, 13, 12, 11, 8,  7,  6,  16, 14, 13, 12, 9,  8,  7},
                    torch::kLong)
          .view({7, 7});
  const auto index = data2vec::vision::relative_position_index(2, 3);
  EXPECT_EQ(index.scalar_type(), torch::kLong);
  EXPECT_TRUE(index.equal(expected)) << index;

  data2vec::vision::RelativePositionBias bias(2, 3, 2);
  EXPECT_EQ(bias->relative_position_index.scalar_type(), torch::kLong);
  bool registered = false;
  for (const auto& b : bias->named_buffers()) registered |= b.key() == "relative_position_index";
  EXPECT_TRUE(registered);
  // forward() gathers the table: bias[h, q, k] = table[index[q, k], h].
  {
    torch::NoGradGuard no_grad;
    bias->relative_position_bias_table.copy_(torch::arange(36, torch::kFloat).view({18, 2}));
  }
  const auto out = bias->forward();  // [2,7,7]
  ASSERT_EQ(out.sizes(), (std::vector<int64_t>{2, 7, 7}));
  EXPECT_TRUE(tensors_close("bias head 1", out[1], (expected * 2 + 1).to(torch::kFloat), 0));
}

TEST(VisionEncoder, LayerResultKinds) {
  torch::manual_seed(0);
  const auto o = small_options().depth(3);
  auto block = make_vision_encoder(o);
  auto ffn = make_vision_encoder(VisionEncoderOptions(o).layer_result(LayerResultKind::kFfn));
  {
    torch::NoGradGuard no_grad;
    auto src = block->named_parameters();
    for (auto& p : ffn->named_parameters()) p.value().copy_(src[p.key()]);
  }
  const auto input = images(2, o);
  const auto a = block->extract_features(input, torch::Tensor());
  const auto b = ffn->extract_features(input, torch::Tensor());
  ASSERT_EQ(a.layer_results.size(), 3u);
  ASSERT_EQ(b.layer_results.size(), 3u);
  EXPECT_TRUE(tensors_close("same x", a.x, b.x, 0));
  // block: the last result is the stream the final LayerNorm reads.
  EXPECT_TRUE(tensors_close("block last", block->layernorm(a.layer_results.back()), a.x, 1e-6));
  // block(l) = block(l-1) + attention part + lambda_2 * ffn(l): the ffn result is what the
  // second residual adds.
  auto& layer = block->encoder->layers[2];
  const auto h = a.layer_results[2] - layer->lambda_2 * b.layer_results[2];
  EXPECT_TRUE(tensors_close("ffn is the second residual branch",
                            layer->feed_forward(layer->layernorm_after(h)), b.layer_results[2],
                            1e-5));
  EXPECT_GT((a.layer_results[2] - b.layer_results[2]).abs().max().item<double>(), 1e-3);
}

TEST(VisionEncoder, MaskedPatchesNeverReachTheBlocks) {
  torch::manual_seed(1);
  const auto o = small_options();
  auto encoder = make_vision_encoder(o);
  auto input = images(2, o);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(11);
  const auto mask = encoder->apply_mask(input, gen).mask;  // [2,17]
  const auto out = encoder->extract_features(input, mask);

  // Change the pixels of every masked patch: nothing downstream of the mask may move.
  const auto patch_mask = mask.slice(1, 1).view({2, 1, 4, 4});
  const auto pixel_mask =
      patch_mask.repeat_interleave(4, 2).repeat_interleave(4, 3);  // [2,1,16,16]
  EncoderInput changed{torch::where(pixel_mask, input.source * -3 + 1, input.source), {}};
  const auto out_changed = encoder->extract_features(changed, mask);
  EXPECT_TRUE(tensors_close("x with masked pixels changed", out_changed.x, out.x, 0));
  for (size_t l = 0; l < out.layer_results.size(); ++l) {
    EXPECT_TRUE(tensors_close("layer " + std::to_string(l), out_changed.layer_results[l],
                              out.layer_results[l], 0));
  }
  // ...while the local (unmasked) features do see them, and so does an unmasked pass.
  const auto sel = mask.unsqueeze(-1).expand_as(out.local_features);
  EXPECT_GT((out_changed.local_features - out.local_features)
                .masked_select(sel)
                .abs()
                .max()
                .item<double>(),
            1e-3);
  EXPECT_GT((encoder->extract_features(changed, {}).x - encoder->extract_features(input, {}).x)
                .abs()
                .max()
                .item<double>(),
            1e-3);

  // A masked position's first-layer input is the mask token itself.
  const auto tokens = encoder->embeddings->forward(input.source, mask.slice(1, 1)).tokens;
  const auto b0 = mask[0].nonzero()[0].item<int64_t>();
  EXPECT_TRUE(
      tensors_close("mask token", tokens[0][b0], encoder->embeddings->mask_token.view({-1}), 0));
  EXPECT_TRUE(
      tensors_close("cls token", tokens[1][0], encoder->embeddings->cls_token.view({-1}), 0));
}

TEST(VisionEncoder, RejectsWrongImageSizeAndMaskShape) {
  auto encoder = make_vision_encoder(small_options());
  EXPECT_THROW(encoder->extract_features({torch::randn({1, 3, 20, 20}), {}}, {}), c10::Error);
  EXPECT_THROW(encoder->extract_features({torch::randn({1, 1, 16, 16}), {}}, {}), c10::Error);
  EXPECT_THROW(
      encoder->extract_features(images(1, small_options()), torch::zeros({1, 16}, torch::kBool)),
      c10::Error);
  EXPECT_THROW(make_vision_encoder(small_options().min_mask_patches(20)), c10::Error);
}

TEST(VisionEncoder, Data2VecStepRunsAndTrains) {
  torch::manual_seed(2);
  const auto o = small_options().depth(3);
  data2vec::Data2VecOptions d2v;
  d2v.targets(data2vec::TargetOptions()
                  .top_k_layers(3)
                  .layer_norm_targets(data2vec::TargetNorm::kLayer)
                  .final_norm(data2vec::TargetNorm::kLayer));
  d2v.loss(data2vec::LossOptions().beta(2.0).scale(1.0));
  data2vec::Data2Vec model([&] { return make_vision_encoder(o); }, d2v);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(3);
  const auto batch = images(4, o);
  const auto out = model->forward(batch, gen);
  ASSERT_EQ(out.loss.dim(), 0);
  EXPECT_TRUE(std::isfinite(out.loss.item<double>()));
  EXPECT_EQ(out.predictions.size(0), 4 * 10);  // round(0.6 * 16) masked patches per image
  out.loss.backward();
  auto student = std::dynamic_pointer_cast<data2vec::vision::VisionEncoderImpl>(model->student());
  ASSERT_TRUE(student);
  EXPECT_GT(student->embeddings->mask_token.grad().abs().sum().item<double>(), 0);
  EXPECT_GT(student->encoder->position_biases[0]
                ->relative_position_bias_table.grad()
                .abs()
                .sum()
                .item<double>(),
            0);
  EXPECT_GT(
      student->embeddings->patch_embeddings->projection->weight.grad().abs().sum().item<double>(),
      0);
  // The teacher's integer buffer survives the EMA update as an integer.
  model->ema_step(0);
  auto teacher = std::dynamic_pointer_cast<data2vec::vision::VisionEncoderImpl>(model->teacher());
  EXPECT_EQ(teacher->encoder->position_biases[0]->relative_position_index.scalar_type(),
            torch::kLong);
  EXPECT_TRUE(teacher->encoder->position_biases[0]->relative_position_index.equal(
      data2vec::vision::relative_position_index(4, 4)));
}

TEST(VisionEncoder, MaskedFractionCountsPatchesNotTheCls) {
  // The CLS token is no input position: it can never be masked, so it is no part of the fraction.
  torch::manual_seed(2);
  const auto o = small_options();
  data2vec::Data2Vec model(
      [&] { return make_vision_encoder(o); },
      data2vec::Data2VecOptions().targets(data2vec::TargetOptions().top_k_layers(2)));
  auto gen = at::make_generator<at::CPUGeneratorImpl>(3);
  const auto out = model->forward(images(4, o), gen);
  EXPECT_NEAR(out.masked_frac.item<double>(), 10.0 / 16.0, 1e-9);  // round(0.6 * 16) of 16
}

TEST(VisionEncoder, RunsUnderBf16Autocast) {
  torch::manual_seed(4);
  const auto o = small_options();
  auto encoder = make_vision_encoder(o);
  const auto input = images(2, o);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(5);
  const auto mask = encoder->apply_mask(input, gen).mask;
  const auto fp32 = encoder->extract_features(input, mask);
  const auto bf16 = [&] {
    data2vec::train::AutocastGuard autocast(torch::kCPU, "bf16");
    return encoder->extract_features(input, mask);
  }();
  // The residual stream stays fp32; only the matmuls ran in bf16.
  EXPECT_EQ(bf16.x.scalar_type(), torch::kFloat);
  EXPECT_TRUE(tensors_close("bf16 vs fp32 output", bf16.x, fp32.x, 0.1));
}

// MAE's get_2d_sincos_pos_embed, written out per element: patch (row i, column j) of the grid;
// channels [0, D/2) encode j and [D/2, D) encode i, each as D/4 sines then D/4 cosines of
// position x 10000^(-k / (D/4)).
TEST(VisionEncoder, SincosPositionTableIsMaesTwoDimensionalTable) {
  const int64_t grid = 7, dim = 16, quarter = dim / 4;
  const auto table = data2vec::vision::sincos_position_table(grid, dim);
  ASSERT_EQ(table.sizes(), torch::IntArrayRef({grid * grid, dim}));
  auto expected = torch::empty({grid * grid, dim}, torch::kDouble);
  for (int64_t i = 0; i < grid; ++i) {
    for (int64_t j = 0; j < grid; ++j) {
      for (int64_t half = 0; half < 2; ++half) {
        const double position = half == 0 ? double(j) : double(i);
        for (int64_t k = 0; k < quarter; ++k) {
          const double angle = position * std::pow(10000.0, -double(k) / double(quarter));
          expected[i * grid + j][half * 2 * quarter + k] = std::sin(angle);
          expected[i * grid + j][half * 2 * quarter + quarter + k] = std::cos(angle);
        }
      }
    }
  }
  EXPECT_TRUE(tensors_close("table", table, expected.to(torch::kFloat), 1e-6));
  EXPECT_NEAR(table[1][0].item<double>(), std::sin(1.0), 1e-6);     // column 1
  EXPECT_NEAR(table[grid][8].item<double>(), std::sin(1.0), 1e-6);  // row 1
  EXPECT_THROW(data2vec::vision::sincos_position_table(grid, 18), c10::Error);
}

// data2vec 2.0's image positions: the fixed table on the patches (none on CLS), frozen, and no
// relative bias beside it; a training step leaves the table as it was.
TEST(VisionEncoder, SincosPositionsAreFixedAndReplaceTheRelativeBias) {
  const auto o = small_options()
                     .absolute_position_embeddings(true)
                     .sincos_position_embeddings(true)
                     .shared_relative_position_bias(false);
  auto encoder = make_vision_encoder(o);
  const auto table = encoder->embeddings->position_embeddings;
  EXPECT_FALSE(table.requires_grad());
  EXPECT_EQ(table[0][0].abs().max().item<float>(), 0.0f);  // CLS
  EXPECT_TRUE(tensors_close("patch rows", table[0].narrow(0, 1, o.num_patches()),
                            data2vec::vision::sincos_position_table(o.grid_size(), o.dim()), 0));
  for (const auto& [name, value] : named(*encoder)) {
    EXPECT_EQ(name.find("relative_position"), std::string::npos) << name;
  }
  // Positions reach the output: the same patches in another order give other features.
  torch::manual_seed(0);
  const auto x = images(2, o);
  encoder->eval();
  const auto a = encoder->extract_features(x, torch::Tensor()).x;
  const auto flipped = EncoderInput{x.source.flip({3}), torch::Tensor()};
  const auto b = encoder->extract_features(flipped, torch::Tensor()).x;
  EXPECT_GT((a - b).abs().max().item<double>(), 1e-3);

  data2vec::Data2Vec model(
      [o] { return make_vision_encoder(o); },
      data2vec::Data2VecOptions().targets(data2vec::TargetOptions().top_k_layers(2)));
  const auto before =
      model->student()->named_parameters()["embeddings.position_embeddings"].clone();
  for (const auto& p : model->trainable_parameters()) EXPECT_TRUE(p.requires_grad());
  EXPECT_EQ(model->trainable_parameters().size() + 1,
            model->student()->parameters().size() + model->head()->parameters().size());
  torch::optim::AdamW optimizer(model->trainable_parameters(), torch::optim::AdamWOptions(1e-2));
  at::Generator generator = at::detail::createCPUGenerator(3);
  const auto out = model->forward(images(4, o), generator);
  out.loss.backward();
  optimizer.step();
  EXPECT_TRUE(tensors_close("after a step",
                            model->student()->named_parameters()["embeddings.position_embeddings"],
                            before, 0));
}

// BEiT divides layer l's output projections by sqrt(2 l) at init; data2vec 2.0 does not.
TEST(VisionEncoder, DepthScaledInitIsBeitsAndCanBeOff) {
  const auto o = small_options().dim(128).mlp_dim(256).depth(4);
  torch::manual_seed(1);
  auto scaled = make_vision_encoder(o);
  torch::manual_seed(1);
  auto plain = make_vision_encoder(VisionEncoderOptions(o).depth_scaled_init(false));
  const auto std_of = [](const std::shared_ptr<data2vec::vision::VisionEncoderImpl>& encoder,
                         const std::string& name) {
    return named(*encoder)[name].std().item<double>();
  };
  for (int64_t layer = 0; layer < 4; ++layer) {
    const auto fc2 = "encoder.layer." + std::to_string(layer) + ".feed_forward.fc2.weight";
    EXPECT_NEAR(std_of(plain, fc2), 0.02, 0.002) << fc2;
    EXPECT_NEAR(std_of(scaled, fc2) / std_of(plain, fc2), 1.0 / std::sqrt(2.0 * (layer + 1)), 1e-6)
        << fc2;
  }
  const auto fc1 = "encoder.layer.3.feed_forward.fc1.weight";
  EXPECT_NEAR(std_of(scaled, fc1), std_of(plain, fc1), 1e-9);
}
