// The Data2Vec module (data2vec, arXiv 2202.03555): what the teacher sees, which layers make the targets,
// where gradients go, which positions count, and that a checkpoint round trip is exact.
#include <cmath>
#include <memory>
#include <set>

#include "data2vec/core/data2vec.h"
#include "data2vec/core/masking.h"
#include "data2vec/core/toy_encoder.h"
#include "data2vec/io/safetensors.h"
#include "support.h"

namespace data2vec {
namespace {

using data2vec::testing::make_temp_dir;
using data2vec::testing::tensors_close;

constexpr int64_t kB = 2, kT = 8, kF = 4, kD = 8, kL = 3;

// A tiny encoder that records every input and mask it is given, and whose final output can be
// shifted by a fixed offset (to perturb the student's predictions at chosen positions).
//   source [B,T,F] -> Linear(F,D) -> mask token at masked steps -> L x (Linear(D,D), tanh)
class RecordingEncoderImpl : public EncoderImpl {
 public:
  RecordingEncoderImpl() {
    proj = register_module("proj", torch::nn::Linear(kF, kD));
    mask_token = register_parameter("mask_token", torch::randn({kD}));
    auto list = register_module("layers", torch::nn::ModuleList());
    for (int64_t i = 0; i < kL; ++i) {
      layers.push_back(torch::nn::Linear(kD, kD));
      list->push_back(layers.back());
    }
  }
  int64_t embed_dim() const override { return kD; }
  int64_t num_layers() const override { return kL; }

  // Masks half the real steps and zeroes the student's input there, so the student's source
  // differs from the batch the teacher must read.
  MaskedInput apply_mask(const EncoderInput& input, at::Generator& generator) override {
    auto mask = random_mask(input.source.size(0), input.source.size(1), 0.5, input.padding_mask,
                            generator);  // [B,T]
    EncoderInput student = input;
    student.source = input.source.masked_fill(mask.unsqueeze(-1), 0.0);
    return {student, mask};
  }

  EncoderOutput extract_features(const EncoderInput& input, const torch::Tensor& mask) override {
    seen_sources.push_back(input.source.clone());
    seen_masks.push_back(mask.defined() ? mask.clone() : torch::Tensor());
    EncoderOutput out;
    out.padding_mask = input.padding_mask;
    auto h = proj(input.source);  // [B,T,D]
    out.local_features = h;
    if (mask.defined()) h = torch::where(mask.unsqueeze(-1), mask_token.view({1, 1, kD}), h);
    for (auto& layer : layers) {
      h = torch::tanh(layer(h));
      out.layer_results.push_back(h);
    }
    out.x = output_offset.defined() ? h + output_offset : h;
    return out;
  }

  torch::nn::Linear proj{nullptr};
  torch::Tensor mask_token;  // [D]
  std::vector<torch::nn::Linear> layers;
  torch::Tensor output_offset;  // [B,T,D] added to x when defined (not a parameter)
  std::vector<torch::Tensor> seen_sources, seen_masks;
};

// An encoder whose layer i outputs the constant 10^i, so an average names the layers it used.
class ConstantLayersEncoderImpl : public EncoderImpl {
 public:
  explicit ConstantLayersEncoderImpl(int64_t num_layers) : num_layers_(num_layers) {
    proj = register_module("proj", torch::nn::Linear(kF, kD));
  }
  int64_t embed_dim() const override { return kD; }
  int64_t num_layers() const override { return num_layers_; }
  MaskedInput apply_mask(const EncoderInput& input, at::Generator& generator) override {
    return {input, random_mask(input.source.size(0), input.source.size(1), 0.5, input.padding_mask,
                               generator)};
  }
  EncoderOutput extract_features(const EncoderInput& input, const torch::Tensor& mask) override {
    EncoderOutput out;
    out.x = proj(input.source);  // [B,T,D]
    out.padding_mask = input.padding_mask;
    for (int64_t i = 0; i < num_layers_; ++i) {
      out.layer_results.push_back(torch::full_like(out.x, std::pow(10.0, double(i))));
    }
    return out;
  }
  torch::nn::Linear proj{nullptr};

 private:
  int64_t num_layers_;
};

std::shared_ptr<EncoderImpl> make_toy() {
  return std::make_shared<ToyEncoderImpl>(
      ToyEncoderOptions().input_dim(kF).dim(kD).depth(kL).num_heads(2).mlp_dim(16).max_len(16));
}

std::shared_ptr<EncoderImpl> make_recording() {
  return std::make_shared<RecordingEncoderImpl>();
}

Data2VecOptions toy_options() {
  return Data2VecOptions().targets(TargetOptions().top_k_layers(2));
}

// Example 1 has its last 3 steps padded.
torch::Tensor make_padding() {
  auto padding = torch::zeros({kB, kT}, torch::kBool);
  padding[1].slice(0, kT - 3).fill_(true);
  return padding;
}

// A fixed mask: 3 real steps in example 0, 2 real steps in example 1, plus one padded step
// (1, 6) that must not count.
torch::Tensor make_mask() {
  auto mask = torch::zeros({kB, kT}, torch::kBool);
  for (int64_t t : {1, 2, 5}) mask[0][t] = true;
  for (int64_t t : {0, 3, 6}) mask[1][t] = true;
  return mask;
}

TEST(Data2Vec, ToyForwardGivesScalarLoss) {
  torch::manual_seed(0);
  Data2Vec model(make_toy, toy_options());
  auto gen = at::detail::createCPUGenerator(1);
  const EncoderInput batch{torch::randn({kB, 10, kF}), {}};
  const auto out = model->forward(batch, gen);
  EXPECT_EQ(out.loss.dim(), 0);
  EXPECT_TRUE(std::isfinite(out.loss.item<double>()));
  const int64_t n = out.mask.sum().item<int64_t>();
  EXPECT_EQ(n, kB * 5);  // toy encoder masks half of each example
  EXPECT_EQ(out.predictions.sizes(), torch::IntArrayRef({n, kD}));
  EXPECT_EQ(out.targets.sizes(), torch::IntArrayRef({n, kD}));
  EXPECT_EQ(out.targets.scalar_type(), torch::kFloat32);
  EXPECT_NEAR(out.masked_frac.item<double>(), 0.5, 1e-12);
  EXPECT_EQ(out.target_std.dim(), 0);
  EXPECT_EQ(out.pred_std.dim(), 0);
}

TEST(Data2Vec, TeacherSeesTheUnmaskedInput) {
  torch::manual_seed(0);
  Data2Vec model(make_recording, toy_options());
  auto student = std::dynamic_pointer_cast<RecordingEncoderImpl>(model->student());
  auto teacher = std::dynamic_pointer_cast<RecordingEncoderImpl>(model->teacher());
  ASSERT_TRUE(student && teacher);
  auto gen = at::detail::createCPUGenerator(3);
  const EncoderInput batch{torch::randn({kB, kT, kF}), make_padding()};
  const auto out = model->forward(batch, gen);

  ASSERT_EQ(student->seen_sources.size(), 1u);
  ASSERT_TRUE(student->seen_masks[0].defined());
  EXPECT_TRUE(torch::equal(student->seen_masks[0], out.mask));
  EXPECT_TRUE(out.mask.any().item<bool>());
  EXPECT_FALSE(torch::equal(student->seen_sources[0], batch.source)) << "student saw no masking";

  ASSERT_EQ(teacher->seen_sources.size(), 1u);
  EXPECT_TRUE(torch::equal(teacher->seen_sources[0], batch.source)) << "teacher input was altered";
  const auto& teacher_mask = teacher->seen_masks[0];
  EXPECT_TRUE(!teacher_mask.defined() || !teacher_mask.any().item<bool>())
      << "teacher was given a mask";
}

TEST(Data2Vec, TeacherTargetsAreBuiltFromUnmaskedFeatures) {
  torch::manual_seed(1);
  Data2Vec model(make_toy, toy_options());
  auto gen = at::detail::createCPUGenerator(4);
  const EncoderInput batch{torch::randn({kB, kT, kF}), make_padding()};
  const auto masked = model->student()->apply_mask(batch, gen);
  const auto out = model->forward_masked(batch, masked);

  torch::Tensor expected;  // [B,T,D]
  {
    torch::NoGradGuard no_grad;
    const auto t = model->teacher()->extract_features(batch, torch::Tensor());
    expected = build_targets(t.layer_results, batch.padding_mask, model->options().targets());
  }
  const auto student_out = model->student()->extract_features(masked.student, masked.mask);
  EXPECT_TRUE(
      tensors_close("teacher_targets", model->teacher_targets(batch, student_out), expected, 1e-6));
  const auto selected = masked.mask & ~batch.padding_mask;
  EXPECT_TRUE(tensors_close("forward targets", out.targets, expected.index({selected}), 1e-6));

  // The same encoder fed the masked input gives different targets: the check above can fail.
  torch::NoGradGuard no_grad;
  const auto wrong = model->teacher()->extract_features(batch, masked.mask);
  const auto wrong_targets =
      build_targets(wrong.layer_results, batch.padding_mask, model->options().targets());
  EXPECT_FALSE(
      tensors_close("masked teacher differs", out.targets, wrong_targets.index({selected}), 1e-3));
}

TEST(Data2Vec, TopKUsesTheLastKLayerResults) {
  const int64_t num_layers = 4;
  const auto factory = [] { return std::make_shared<ConstantLayersEncoderImpl>(4); };
  const EncoderInput batch{torch::randn({kB, kT, kF}), make_padding()};
  const std::vector<std::pair<int64_t, double>> cases = {{1, 1000.0}, {2, 550.0}, {4, 277.75}};
  for (const auto& [k, expected] : cases) {
    const auto options = Data2VecOptions().targets(TargetOptions()
                                                       .top_k_layers(k)
                                                       .layer_norm_targets(TargetNorm::kNone)
                                                       .final_norm(TargetNorm::kNone));
    Data2Vec model(factory, options);
    auto gen = at::detail::createCPUGenerator(0);
    const auto out = model->forward(batch, gen);
    EXPECT_TRUE(tensors_close("top-" + std::to_string(k), out.targets,
                              torch::full_like(out.targets, expected), 1e-4));
  }
  const auto too_many = Data2VecOptions().targets(TargetOptions().top_k_layers(num_layers + 1));
  EXPECT_THROW(Data2Vec model(factory, too_many), c10::Error);
}

TEST(Data2Vec, NoGradientReachesTheTeacher) {
  torch::manual_seed(2);
  Data2Vec model(make_toy, toy_options());
  model->train();
  EXPECT_TRUE(model->student()->is_training());
  EXPECT_FALSE(model->teacher()->is_training()) << "train() must leave the teacher in eval mode";
  auto gen = at::detail::createCPUGenerator(5);
  const EncoderInput batch{torch::randn({kB, kT, kF}), make_padding()};
  const auto out = model->forward(batch, gen);
  EXPECT_FALSE(out.targets.requires_grad());
  out.loss.backward();

  for (const auto& item : model->teacher()->named_parameters()) {
    EXPECT_FALSE(item.value().requires_grad()) << "teacher." << item.key();
    EXPECT_FALSE(item.value().grad().defined()) << "teacher." << item.key();
  }
  for (const auto& item : model->student()->named_parameters()) {
    EXPECT_TRUE(item.value().grad().defined()) << "student." << item.key();
  }
  for (const auto& item : model->head()->named_parameters()) {
    ASSERT_TRUE(item.value().grad().defined()) << "head." << item.key();
    EXPECT_GT(item.value().grad().abs().sum().item<double>(), 0.0) << "head." << item.key();
  }

  // trainable_parameters = student + head, never the teacher.
  std::set<const void*> teacher_ids, expected_ids, trainable_ids;
  for (auto& p : model->teacher()->parameters()) teacher_ids.insert(p.unsafeGetTensorImpl());
  for (auto& p : model->student()->parameters()) expected_ids.insert(p.unsafeGetTensorImpl());
  for (auto& p : model->head()->parameters()) expected_ids.insert(p.unsafeGetTensorImpl());
  const auto trainable = model->trainable_parameters();
  for (auto& p : trainable) trainable_ids.insert(p.unsafeGetTensorImpl());
  EXPECT_EQ(trainable.size(), trainable_ids.size()) << "duplicates in trainable_parameters";
  EXPECT_EQ(trainable_ids, expected_ids);
  for (const void* id : trainable_ids) EXPECT_EQ(teacher_ids.count(id), 0u);
}

TEST(Data2Vec, PredictionsOutsideMaskedRealPositionsDoNotCount) {
  torch::manual_seed(3);
  Data2Vec model(make_recording, toy_options());
  auto student = std::dynamic_pointer_cast<RecordingEncoderImpl>(model->student());
  ASSERT_TRUE(student);
  const EncoderInput batch{torch::randn({kB, kT, kF}), make_padding()};
  const MaskedInput masked{batch, make_mask()};
  const auto base = model->forward_masked(batch, masked);
  EXPECT_EQ(base.predictions.size(0), 5);

  // Large offsets wherever the position is unmasked or padded (the padded step (1,6) is masked).
  const auto counted = (masked.mask & ~batch.padding_mask).unsqueeze(-1);  // [B,T,1]
  student->output_offset = (torch::randn({kB, kT, kD}) * 100).masked_fill(counted, 0.0);
  const auto perturbed = model->forward_masked(batch, masked);
  EXPECT_EQ(perturbed.loss.item<float>(), base.loss.item<float>());
  EXPECT_TRUE(torch::equal(perturbed.predictions, base.predictions));

  // An offset at one masked real position changes the loss: the check above can fail.
  student->output_offset = torch::zeros({kB, kT, kD});
  student->output_offset[0][2].fill_(5.0);
  EXPECT_NE(model->forward_masked(batch, masked).loss.item<float>(), base.loss.item<float>());
}

TEST(Data2Vec, PaddedInputDoesNotChangeTheLoss) {
  torch::manual_seed(4);
  Data2Vec model(make_toy, toy_options());
  const auto padding = make_padding();
  const EncoderInput batch{torch::randn({kB, kT, kF}), padding};
  const MaskedInput masked{batch, make_mask()};
  const auto base = model->forward_masked(batch, masked);

  EncoderInput noisy = batch;
  noisy.source = batch.source.masked_fill(padding.unsqueeze(-1), 1e3);
  const auto out = model->forward_masked(noisy, MaskedInput{noisy, masked.mask});
  EXPECT_TRUE(tensors_close("loss", out.loss, base.loss, 1e-6));
  EXPECT_TRUE(tensors_close("targets", out.targets, base.targets, 1e-5));
  EXPECT_TRUE(tensors_close("predictions", out.predictions, base.predictions, 1e-5));

  // Without the padding mask the same change does move the loss (the test can fail).
  const EncoderInput unpadded{batch.source, {}}, unpadded_noisy{noisy.source, {}};
  const auto a = model->forward_masked(unpadded, MaskedInput{unpadded, masked.mask});
  const auto b = model->forward_masked(unpadded_noisy, MaskedInput{unpadded_noisy, masked.mask});
  EXPECT_GT(std::abs(a.loss.item<double>() - b.loss.item<double>()), 1e-4);
}

TEST(Data2Vec, AllPaddedExampleKeepsLossAndGradientsFinite) {
  // A batch may end with an example that is padding only (random_mask gives it no mask). It
  // contributes nothing, and must not poison the loss or the gradients with NaN.
  torch::manual_seed(7);
  Data2Vec model(make_toy, toy_options());
  auto padding = make_padding();
  padding[1].fill_(true);
  const EncoderInput batch{torch::randn({kB, kT, kF}), padding};
  auto gen = at::detail::createCPUGenerator(8);
  const auto out = model->forward(batch, gen);
  EXPECT_FALSE(out.mask[1].any().item<bool>());
  EXPECT_TRUE(std::isfinite(out.loss.item<double>()));
  EXPECT_TRUE(torch::isfinite(out.targets).all().item<bool>());
  out.loss.backward();
  for (const auto& item : model->named_parameters()) {
    if (!item.value().grad().defined()) continue;
    EXPECT_TRUE(torch::isfinite(item.value().grad()).all().item<bool>())
        << item.key() << " has a non-finite gradient";
  }
}

TEST(Data2Vec, MaskedFractionExcludesPadding) {
  torch::manual_seed(5);
  Data2Vec model(make_toy, toy_options());
  const EncoderInput batch{torch::randn({kB, kT, kF}), make_padding()};
  const auto out = model->forward_masked(batch, MaskedInput{batch, make_mask()});
  // 5 masked real steps out of 8 + 5 real steps; the masked padded step does not count.
  EXPECT_NEAR(out.masked_frac.item<double>(), 5.0 / 13.0, 1e-12);
  EXPECT_EQ(out.predictions.size(0), 5);
  EXPECT_EQ(out.targets.size(0), 5);
}

TEST(Data2Vec, HeadLayouts) {
  Data2Vec linear(make_toy, toy_options());
  ASSERT_EQ(linear->head()->size(), 1u);
  EXPECT_EQ(linear->head()->named_parameters()["0.weight"].sizes(), torch::IntArrayRef({kD, kD}));
  Data2Vec mlp(make_toy, toy_options().head_hidden_mult(2));
  ASSERT_EQ(mlp->head()->size(), 3u);
  EXPECT_EQ(mlp->head()->named_parameters()["0.weight"].sizes(), torch::IntArrayRef({2 * kD, kD}));
  EXPECT_EQ(mlp->head()->named_parameters()["2.weight"].sizes(), torch::IntArrayRef({kD, 2 * kD}));
}

TEST(Data2Vec, TeacherStartsAsACopyAndEmaStepMovesIt) {
  torch::manual_seed(6);
  Data2Vec model(make_toy,
                 toy_options().ema(EmaOptions().decay_start(0.5).decay_end(1.0).anneal_steps(2)));
  const auto student = model->student()->named_parameters();
  const auto teacher = model->teacher()->named_parameters();
  for (const auto& item : student) {
    EXPECT_TRUE(torch::equal(teacher[item.key()], item.value())) << item.key();
  }
  {
    torch::NoGradGuard no_grad;
    for (auto& p : model->student()->parameters()) p.add_(1.0);
  }
  const auto before = model->teacher()->parameters()[0].clone();
  EXPECT_DOUBLE_EQ(model->ema_step(0), 0.5);
  EXPECT_TRUE(tensors_close("ema step", model->teacher()->parameters()[0], before + 0.5, 1e-6));
  // decay_end 1.0 freezes the teacher.
  const auto frozen = model->teacher()->parameters()[0].clone();
  EXPECT_DOUBLE_EQ(model->ema_step(5), 1.0);
  EXPECT_TRUE(torch::equal(model->teacher()->parameters()[0], frozen));
}

TEST(Data2Vec, SaveLoadRoundTripIsExact) {
  const auto options =
      toy_options().ema(EmaOptions().decay_start(0.5).decay_end(0.5).anneal_steps(0));
  torch::manual_seed(10);
  Data2Vec model(make_toy, options);
  // One training step and one EMA step so that student and teacher differ.
  const EncoderInput batch{torch::randn({kB, kT, kF}), make_padding()};
  {
    torch::optim::SGD sgd(model->trainable_parameters(), torch::optim::SGDOptions(0.5));
    auto gen = at::detail::createCPUGenerator(11);
    sgd.zero_grad();
    model->forward(batch, gen).loss.backward();
    sgd.step();
    model->ema_step(0);
  }
  const auto params = model->named_parameters();
  EXPECT_FALSE(torch::equal(params["student.embed.weight"], params["teacher.embed.weight"]));

  io::NamedTensors tensors;
  for (const auto& item : model->named_parameters()) tensors.emplace_back(item.key(), item.value());
  for (const auto& item : model->named_buffers()) tensors.emplace_back(item.key(), item.value());
  const auto path = make_temp_dir("core-d2v-roundtrip") + "/model.safetensors";
  io::save_safetensors(path, tensors);

  torch::manual_seed(20);
  Data2Vec loaded(make_toy, options);
  EXPECT_FALSE(torch::equal(loaded->named_parameters()["head.0.weight"], params["head.0.weight"]));
  const auto content = io::load_safetensors(path);
  ASSERT_EQ(content.tensors.size(), tensors.size());
  {
    torch::NoGradGuard no_grad;
    auto dst_params = loaded->named_parameters();
    auto dst_buffers = loaded->named_buffers();
    ASSERT_EQ(dst_params.size() + dst_buffers.size(), tensors.size());
    for (const auto& [name, value] : content.tensors) {
      torch::Tensor* dst = dst_params.find(name);
      if (dst == nullptr) dst = dst_buffers.find(name);
      ASSERT_NE(dst, nullptr) << "no tensor named " << name << " in the fresh model";
      dst->copy_(value);
    }
  }
  auto loaded_params = loaded->named_parameters();
  auto loaded_buffers = loaded->named_buffers();
  for (const auto& [name, original] : tensors) {
    torch::Tensor* restored = loaded_params.find(name);
    if (restored == nullptr) restored = loaded_buffers.find(name);
    ASSERT_NE(restored, nullptr) << name;
    EXPECT_EQ(restored->scalar_type(), original.scalar_type()) << name;
    EXPECT_TRUE(torch::equal(*restored, original)) << name << " differs after the round trip";
  }
  // The teacher stays frozen and in eval mode after loading.
  for (auto& p : loaded->teacher()->parameters()) EXPECT_FALSE(p.requires_grad());

  const MaskedInput masked{batch, make_mask()};
  const auto a = model->forward_masked(batch, masked);
  const auto b = loaded->forward_masked(batch, masked);
  EXPECT_EQ(a.loss.item<float>(), b.loss.item<float>());
  EXPECT_TRUE(torch::equal(a.predictions, b.predictions));
  EXPECT_TRUE(torch::equal(a.targets, b.targets));
}

}  // namespace
}  // namespace data2vec
