// data2vec 2.0 in the core (data2vec 2.0, arXiv 2212.07525): gather / restore of kept positions,
// the decoder, and Data2Vec with algorithm v2 — the student encodes kept positions only, the
// teacher runs once per original example, its targets are the same for every copy, the loss covers
// the masked positions of every copy and nothing else, and no gradient reaches the teacher.
#include <cmath>
#include <cstdlib>
#include <set>

#include "data2vec/core/data2vec.h"
#include "data2vec/core/decoder.h"
#include "data2vec/core/masking.h"
#include "data2vec/core/toy_encoder.h"
#include "support.h"

namespace data2vec {
namespace {

using data2vec::testing::tensors_close;

constexpr int64_t kB = 3, kT = 10, kF = 4, kD = 16, kM = 4;

ToyEncoderOptions toy_options() {
  return ToyEncoderOptions().input_dim(kF).dim(kD).depth(3).num_heads(2).mlp_dim(32).max_len(kT);
}

// The toy encoder, counting how the teacher and the student are called.
class CountingEncoderImpl : public ToyEncoderImpl {
 public:
  CountingEncoderImpl() : ToyEncoderImpl(toy_options()) {}
  EncoderOutput extract_features(const EncoderInput& input, const torch::Tensor& mask) override {
    full_batches.push_back(input.batch_size());
    return ToyEncoderImpl::extract_features(input, mask);
  }
  EncoderOutput extract_kept_features(const EncoderInput& input, const torch::Tensor& ids_keep,
                                      int64_t clones) override {
    kept_rows.push_back(ids_keep.size(0));
    return ToyEncoderImpl::extract_kept_features(input, ids_keep, clones);
  }
  std::vector<int64_t> full_batches, kept_rows;
};

// An encoder written for data2vec 1.0 only (no kept encoding).
class V1OnlyEncoderImpl : public EncoderImpl {
 public:
  V1OnlyEncoderImpl() { proj = register_module("proj", torch::nn::Linear(kF, kD)); }
  int64_t embed_dim() const override { return kD; }
  int64_t num_layers() const override { return 1; }
  MaskedInput apply_mask(const EncoderInput& input, at::Generator& generator) override {
    return {input, random_mask(input.source.size(0), input.source.size(1), 0.5, {}, generator)};
  }
  EncoderOutput extract_features(const EncoderInput& input, const torch::Tensor&) override {
    EncoderOutput out;
    out.x = torch::tanh(proj(input.source));
    out.layer_results = {out.x};
    return out;
  }
  torch::nn::Linear proj{nullptr};
};

Data2VecOptions v2_options() {
  return Data2VecOptions()
      .algorithm(Algorithm::kV2)
      .clone_batch(kM)
      .decoder_dim(16)
      .decoder_layers(2)
      .decoder_groups(4)
      .decoder_kernel(3)
      .targets(TargetOptions()
                   .top_k_layers(2)
                   .layer_norm_targets(TargetNorm::kInstance)
                   .final_norm(TargetNorm::kNone))
      .loss(LossOptions().beta(0).scale(-1));
}

torch::Tensor make_padding() {  // [B,T]: example 1 has 3 padded steps, example 2 one
  auto padding = torch::zeros({kB, kT}, torch::kBool);
  padding[1].slice(0, kT - 3).fill_(true);
  padding[2][kT - 1] = true;
  return padding;
}

std::shared_ptr<EncoderImpl> make_counting() {
  return std::make_shared<CountingEncoderImpl>();
}

// ---- gather / restore ----

TEST(V2Keep, GatherThenRestoreIsTheIdentityOnKeptPositions) {
  auto gen = at::detail::createCPUGenerator(3);
  const auto mask = random_mask_same_count(5, kT, 0.6, {}, gen);  // [5,T]
  const auto x = torch::randn({5, kT, kD});
  const auto ids = keep_indices(mask);  // [5,Tk]
  ASSERT_EQ(ids.size(1), kT - 6);
  // Ascending within each row, and exactly the unmasked positions.
  EXPECT_TRUE((ids.diff(1, 1) > 0).all().item<bool>());
  for (int64_t r = 0; r < 5; ++r) {
    EXPECT_FALSE(mask[r].index({ids[r]}).any().item<bool>());
  }
  const auto kept = gather_positions(x, ids);  // [5,Tk,D]
  const auto fill = torch::full({5, kT, kD}, -7.0);
  const auto restored = restore_positions(kept, ids, fill);
  const auto keep = ~mask.unsqueeze(-1);
  EXPECT_TRUE(torch::equal(restored.masked_select(keep), x.masked_select(keep)));
  EXPECT_TRUE((restored.masked_select(~keep) == -7.0).all().item<bool>());
}

TEST(V2Keep, GatherCopiesEqualsGatherOnRepeatedRows) {
  auto gen = at::detail::createCPUGenerator(5);
  const auto x = torch::randn({kB, kT, kD});
  const auto mask = random_mask_same_count(kB * kM, kT, 0.5, {}, gen);
  const auto ids = keep_indices(mask);
  EXPECT_TRUE(
      torch::equal(gather_copies(x, ids, kM), gather_positions(x.repeat_interleave(kM, 0), ids)));
  // The gradient sums over the copies; a [B,T] mask (no trailing dims) gathers the same way.
  const auto xg = x.clone().requires_grad_();
  const auto xr = x.clone().requires_grad_();
  const auto weights = torch::randn({kB * kM, ids.size(1), kD});
  (gather_copies(xg, ids, kM) * weights).sum().backward();
  (gather_positions(xr.repeat_interleave(kM, 0), ids) * weights).sum().backward();
  EXPECT_TRUE(tensors_close("gather_copies gradient", xg.grad(), xr.grad(), 1e-5));
  const auto padding = torch::rand({kB, kT}) < 0.3;
  EXPECT_TRUE(torch::equal(gather_copies(padding, ids, kM),
                           padding.repeat_interleave(kM, 0).gather(1, ids)));
}

TEST(V2Keep, UnequalKeptCountsAreRejected) {
  auto mask = torch::zeros({2, kT}, torch::kBool);
  mask[0][1] = true;
  EXPECT_THROW(keep_indices(mask), c10::Error);
}

TEST(V2Keep, RestoredOrderCarriesGradientToKeptTokensOnly) {
  const auto kept = torch::randn({2, 3, kD}, torch::requires_grad());
  const auto ids = torch::tensor({0, 4, 7, 1, 2, 9}, torch::kLong).view({2, 3});
  const auto fill = torch::randn({2, kT, kD}, torch::requires_grad());
  restore_positions(kept, ids, fill).sum().backward();
  EXPECT_TRUE(torch::equal(kept.grad(), torch::ones_like(kept)));
  // The fill's slots that were overwritten get no gradient.
  EXPECT_EQ(fill.grad().sum().item<double>(), double(2 * (kT - 3) * kD));
}

TEST(V2Keep, SelectPositionsEqualsTheBooleanIndexInValuesAndGradient) {
  torch::manual_seed(3);
  const auto mask = torch::rand({kB * kM, kT}) < 0.7;  // [R,T]
  const auto x = torch::randn({kB * kM, kT, kD}, torch::requires_grad());
  const auto y = torch::randn({kB * kM, kT, kD}, torch::requires_grad());
  const auto selected = select_positions(x, mask);
  const auto reference = y.index({mask});
  ASSERT_EQ(selected.sizes(), reference.sizes());
  const auto weights = torch::randn(selected.sizes());
  (selected * weights).sum().backward();
  (reference * weights).sum().backward();
  EXPECT_TRUE(torch::equal(selected.detach(), x.detach().index({mask})));
  EXPECT_TRUE(torch::equal(x.grad(), y.grad()));
  // Unselected positions get exactly zero; a strided mask (a slice) selects the same rows.
  EXPECT_TRUE((x.grad().index({~mask}) == 0).all().item<bool>());
  const auto wide = torch::rand({kB * kM, kT + 2}) < 0.5;
  EXPECT_TRUE(torch::equal(select_positions(x.detach(), wide.slice(1, 2)),
                           x.detach().index({wide.slice(1, 2)})));
}

TEST(V2Keep, SelectPositionsRejectsAMaskOfAnotherShapeOrType) {
  const auto x = torch::randn({2, kT, kD});
  EXPECT_THROW(select_positions(x, torch::zeros({2, kT + 1}, torch::kBool)), c10::Error);
  EXPECT_THROW(select_positions(x, torch::zeros({2, kT}, torch::kLong)), c10::Error);
  EXPECT_THROW(select_positions(x.select(2, 0), torch::zeros({2, kT}, torch::kBool)), c10::Error);
}

// ---- the decoder ----

TEST(V2Decoder, ShapesAndTwoDimensionalNeighbourhood) {
  torch::manual_seed(0);
  Decoder dec1(kD, DecoderOptions().dim(8).kernel(3).groups(4).layers(2));
  EXPECT_EQ(dec1->forward(torch::randn({2, kT, kD}), {}).sizes(), torch::IntArrayRef({2, kT, kD}));

  // One 3x3 block on a 7x7 row-major grid: a change at patch (3,3) reaches exactly its 3x3
  // neighbourhood, so the grid is laid out as the patches are.
  Decoder dec2(kD, DecoderOptions().dim(8).kernel(3).groups(4).layers(1).grid({7, 7}));
  dec2->eval();
  auto x = torch::randn({1, 49, kD});
  auto y = x.clone();
  y[0][3 * 7 + 3] += 1.0;
  const auto changed = (dec2->forward(x, {}) - dec2->forward(y, {})).abs().sum(-1)[0] > 1e-6;
  for (int64_t i = 0; i < 7; ++i)
    for (int64_t j = 0; j < 7; ++j)
      EXPECT_EQ(changed[i * 7 + j].item<bool>(), std::abs(i - 3) <= 1 && std::abs(j - 3) <= 1)
          << "patch (" << i << "," << j << ")";
}

TEST(V2Decoder, PaddedSlotsDoNotReachRealOnes) {
  torch::manual_seed(0);
  Decoder dec(kD, DecoderOptions().dim(8).kernel(5).groups(1).layers(3));
  auto padding = torch::zeros({1, kT}, torch::kBool);
  padding[0].slice(0, 6).fill_(true);
  auto x = torch::randn({1, kT, kD});
  auto y = x.clone();
  y[0].slice(0, 6) = torch::randn({kT - 6, kD}) * 100;
  EXPECT_TRUE(tensors_close("real slots", dec->forward(y, padding).slice(1, 0, 6),
                            dec->forward(x, padding).slice(1, 0, 6), 1e-5));
}

// The noise is N(0, std^2), reproducible from the seed and the same at any thread count.
TEST(V2Decoder, MaskNoiseFollowsTheSeedNotTheThreadCount) {
  const int64_t threads = at::get_num_threads();
  const std::vector<int64_t> sizes{7, 50, 400};  // 140000 values: three chunks, the last partial
  at::set_num_threads(1);
  torch::manual_seed(21);
  const auto one_thread = mask_noise(sizes, 0.5, torch::kFloat32);
  at::set_num_threads(2);
  torch::manual_seed(21);
  const auto two_threads = mask_noise(sizes, 0.5, torch::kFloat32);
  torch::manual_seed(22);
  const auto other_seed = mask_noise(sizes, 0.5, torch::kFloat32);
  at::set_num_threads(int(threads));
  EXPECT_TRUE(torch::equal(one_thread, two_threads));
  EXPECT_FALSE(torch::equal(one_thread, other_seed));
  EXPECT_EQ(one_thread.sizes(), torch::IntArrayRef(sizes));
  EXPECT_NEAR(one_thread.mean().item<double>(), 0.0, 0.01);
  EXPECT_NEAR(one_thread.std().item<double>(), 0.5, 0.01);
  // Each chunk draws its own values: no two chunks repeat each other.
  const auto flat = one_thread.view({-1});
  EXPECT_FALSE(torch::equal(flat.slice(0, 0, 1000), flat.slice(0, 65536, 65536 + 1000)));
}

// The projection runs through nn::linear on the decoder's GEMM library: with one linear or a
// Linear-GELU-Linear stack, every library gives what the modules' own forward gives, in outputs
// and in every parameter's gradient.
TEST(V2Decoder, ProjectionOnEveryGemmLibraryMatchesTheLinearModules) {
  std::vector<nn::GemmLibrary> libraries{nn::GemmLibrary::kTorch};
  if (nn::have_onednn_gemm()) libraries.push_back(nn::GemmLibrary::kOneDnn);
  for (const int64_t projection_layers : {1, 2}) {
    for (const auto library : libraries) {
      torch::manual_seed(11);
      const auto options = DecoderOptions().dim(8).kernel(3).groups(4).layers(1).projection_layers(
          projection_layers);
      Decoder dec(kD, DecoderOptions(options).gemm(library));
      const auto x = torch::randn({3, kT, kD});
      const auto y = dec->forward(x, {});
      // The reference: the same blocks, then the registered modules' forward.
      // No residual: the block's width (8) is not the input's (kD).
      const auto h = dec->blocks[0]->forward(x.transpose(1, 2)).transpose(1, 2);  // [R,T,Dd]
      const auto reference =
          dec->proj ? dec->proj(h) : dec->projection_layers->forward(h);  // [R,T,D]
      const std::string what = "projection_layers " + std::to_string(projection_layers) + " on " +
                               nn::to_string(library);
      EXPECT_TRUE(tensors_close(what, y, reference, 1e-5));
      const auto weights = torch::randn(y.sizes());
      const auto params = dec->parameters();
      const auto g1 = torch::autograd::grad({(y * weights).sum()}, params);
      const auto g2 = torch::autograd::grad({(reference * weights).sum()}, params);
      for (size_t i = 0; i < params.size(); ++i)
        EXPECT_TRUE(tensors_close(what + " gradient " + std::to_string(i), g1[i], g2[i], 1e-4));
    }
  }
}

// ---- Data2Vec v2 ----

TEST(Data2VecV2, TeacherRunsOncePerOriginalExampleStudentOnKeptCopies) {
  torch::manual_seed(1);
  Data2Vec model(make_counting, v2_options());
  auto* student = dynamic_cast<CountingEncoderImpl*>(model->student().get());
  auto* teacher = dynamic_cast<CountingEncoderImpl*>(model->teacher().get());
  ASSERT_TRUE(student && teacher);
  auto gen = at::detail::createCPUGenerator(2);
  const EncoderInput batch{torch::randn({kB, kT, kF}), make_padding()};
  model->forward(batch, gen);
  EXPECT_EQ(teacher->full_batches, std::vector<int64_t>({kB})) << "teacher forwards (batch sizes)";
  EXPECT_TRUE(teacher->kept_rows.empty());
  EXPECT_TRUE(student->full_batches.empty()) << "the v2 student must not encode the full input";
  EXPECT_EQ(student->kept_rows, std::vector<int64_t>({kB * kM}));
}

TEST(Data2VecV2, TargetsAreTheTeachersRepeatedForEveryCopyAtMaskedRealPositions) {
  torch::manual_seed(1);
  Data2Vec model(make_counting, v2_options());
  auto gen = at::detail::createCPUGenerator(7);
  const EncoderInput batch{torch::randn({kB, kT, kF}), make_padding()};
  const auto masked = model->apply_mask(batch, gen);
  ASSERT_EQ(masked.mask.sizes(), torch::IntArrayRef({kB * kM, kT}));
  // Every copy its own mask; the same kept count in every row (padding kept or dropped for it).
  EXPECT_FALSE(torch::equal(masked.mask[0], masked.mask[1]));
  const auto copies_padding = batch.padding_mask.repeat_interleave(kM, 0);
  const auto kept = (~masked.mask).sum(1);
  EXPECT_TRUE((kept == kept[0]).all().item<bool>());

  const auto out = model->forward_masked(batch, masked);
  torch::Tensor expected;  // [B,T,D] from one teacher pass on the unmasked batch
  {
    torch::NoGradGuard no_grad;
    const auto t = model->teacher()->extract_features(batch, {});
    expected = build_targets(t.layer_results, batch.padding_mask, model->options().targets());
  }
  const auto selected = masked.mask & ~copies_padding;  // [B*M,T]
  EXPECT_EQ(out.predictions.size(0), selected.sum().item<int64_t>());
  EXPECT_EQ(out.predictions.sizes(), out.targets.sizes());
  EXPECT_TRUE(tensors_close("targets", out.targets,
                            expected.repeat_interleave(kM, 0).index({selected}), 1e-6));

  // With one mask shared by all copies of an example, the copies' targets are identical.
  const auto shared = masked.mask.view({kB, kM, kT}).select(1, 0).repeat_interleave(kM, 0);
  const auto out_shared = model->forward_masked(batch, MaskedInput{batch, shared});
  const auto full = torch::zeros({kB * kM, kT, kD});
  const auto placed =
      full.index_put({shared & ~copies_padding}, out_shared.targets).view({kB, kM, kT, kD});
  for (int64_t c = 1; c < kM; ++c)
    EXPECT_TRUE(torch::equal(placed.select(1, c), placed.select(1, 0))) << "copy " << c;
}

TEST(Data2VecV2, LossCoversMaskedPositionsOfEveryCopyOnly) {
  torch::manual_seed(1);
  Data2Vec model(make_counting, v2_options());
  const EncoderInput batch{torch::randn({kB, kT, kF}), make_padding()};
  auto gen = at::detail::createCPUGenerator(9);
  const auto masked = model->apply_mask(batch, gen);
  const auto copies_padding = batch.padding_mask.repeat_interleave(kM, 0);  // [B*M,T]
  const auto selected = masked.mask & ~copies_padding;
  for (int64_t r = 0; r < kB * kM; ++r) EXPECT_GT(selected[r].sum().item<int64_t>(), 0) << r;

  torch::manual_seed(11);  // the decoder's noise is the only draw of the pass
  const auto out = model->forward_masked(batch, masked);

  // The same pass by hand: the predictions are the decoder's output at exactly the masked, real
  // positions of every copy, in row-major order, and the loss averages over those alone.
  torch::NoGradGuard no_grad;
  const auto ids = keep_indices(masked.mask);
  const auto kept = model->student()->extract_kept_features(batch, ids, kM).x;  // [B*M,Tk,D]
  EXPECT_EQ(kept.sizes(), torch::IntArrayRef({kB * kM, ids.size(1), kD}));
  torch::manual_seed(11);
  const auto noise = mask_noise({kB * kM, kT, kD}, 0.01, torch::kFloat32);
  const auto decoded =
      model->decoder()->forward(restore_positions(kept, ids, noise), copies_padding);
  EXPECT_TRUE(tensors_close("predictions", out.predictions, decoded.index({selected}), 1e-5));
  const auto per_position = (out.predictions - out.targets).pow(2).sum(-1) / std::sqrt(double(kD));
  EXPECT_TRUE(tensors_close("loss", out.loss, per_position.mean(), 1e-5));
  EXPECT_NEAR(out.masked_frac.item<double>(),
              double(selected.sum().item<int64_t>()) /
                  double((~batch.padding_mask).sum().item<int64_t>() * kM),
              1e-9);
}

TEST(Data2VecV2, EveryRowMasksItsOwnShareAndPaddingNeverCounts) {
  // Real lengths 10, 7 and 9 at mask ratio 0.5: 5, 4 and 5 masked in every copy, whatever the
  // shortest row (masking all rows by the shortest would give 4, 4, 4).
  torch::manual_seed(1);
  Data2Vec model(make_counting, v2_options());
  const EncoderInput batch{torch::randn({kB, kT, kF}), make_padding()};
  auto gen = at::detail::createCPUGenerator(4);
  torch::manual_seed(3);
  const auto out = model->forward(batch, gen);
  const auto copies_padding = batch.padding_mask.repeat_interleave(kM, 0);  // [B*M,T]
  const auto masked_real = (out.mask & ~copies_padding).sum(1);
  const std::vector<int64_t> expected = {5, 4, 5};
  for (int64_t r = 0; r < kB * kM; ++r)
    EXPECT_EQ(masked_real[r].item<int64_t>(), expected[r / kM]) << "row " << r;
  EXPECT_EQ(out.predictions.size(0), kM * (5 + 4 + 5));
  EXPECT_NEAR(out.masked_frac.item<double>(), 14.0 / 26.0, 1e-9);

  // Padding never counts: whatever the padded steps hold, the loss is the same.
  auto garbage = batch.source.clone();
  garbage.masked_fill_(batch.padding_mask.unsqueeze(-1), 100.0);
  auto same_gen = at::detail::createCPUGenerator(4);
  torch::manual_seed(3);
  const auto again = model->forward(EncoderInput{garbage, batch.padding_mask}, same_gen);
  EXPECT_TRUE(torch::equal(again.mask, out.mask));
  EXPECT_TRUE(tensors_close("loss", again.loss, out.loss, 1e-5));
}

TEST(Data2VecV2, MasksDrawnInGroupsJoinIntoOneBatch) {
  // The trainer draws masks in groups of train.mask_group examples and joins them: a group of
  // long rows and a group with shorter ones must still keep the same count in every row.
  torch::manual_seed(1);
  Data2Vec model(make_counting, v2_options());
  const EncoderInput batch{torch::randn({kB, kT, kF}), make_padding()};
  auto gen = at::detail::createCPUGenerator(5);
  const auto first = model->apply_mask(
      EncoderInput{batch.source.slice(0, 0, 1), batch.padding_mask.slice(0, 0, 1)}, gen);
  const auto rest = model->apply_mask(
      EncoderInput{batch.source.slice(0, 1), batch.padding_mask.slice(0, 1)}, gen);
  const MaskedInput joined{batch, torch::cat({first.mask, rest.mask})};
  Data2VecOutput out;
  EXPECT_NO_THROW(out = model->forward_masked(batch, joined));
  ASSERT_TRUE(out.loss.defined());
  EXPECT_EQ(out.predictions.size(0), kM * (5 + 4 + 5));
}

TEST(Data2VecV2, GradientsReachStudentAndDecoderNeverTheTeacher) {
  torch::manual_seed(1);
  Data2Vec model(make_counting, v2_options());
  auto gen = at::detail::createCPUGenerator(2);
  const auto out = model->forward(EncoderInput{torch::randn({kB, kT, kF}), make_padding()}, gen);
  EXPECT_FALSE(out.targets.requires_grad());
  out.loss.backward();
  for (const auto& item : model->teacher()->named_parameters())
    EXPECT_FALSE(item.value().grad().defined()) << "teacher." << item.key();
  for (const auto& item : model->student()->named_parameters()) {
    if (item.key() == "mask_token") continue;  // v2 drops masked steps: no mask token
    ASSERT_TRUE(item.value().grad().defined()) << "student." << item.key();
    EXPECT_GT(item.value().grad().abs().sum().item<double>(), 0.0) << "student." << item.key();
  }
  for (const auto& item : model->decoder()->named_parameters()) {
    ASSERT_TRUE(item.value().grad().defined()) << "decoder." << item.key();
    EXPECT_GT(item.value().grad().abs().sum().item<double>(), 0.0) << "decoder." << item.key();
  }
  std::set<const void*> teacher_ids;
  for (auto& p : model->teacher()->parameters()) teacher_ids.insert(p.unsafeGetTensorImpl());
  for (auto& p : model->trainable_parameters())
    EXPECT_EQ(teacher_ids.count(p.unsafeGetTensorImpl()), 0u);
  EXPECT_EQ(model->trainable_parameters().size(),
            model->student()->parameters().size() + model->decoder()->parameters().size());
}

TEST(Data2VecV2, DecoderTakesTheHeadsPlaceInTheCheckpointNames) {
  torch::manual_seed(1);
  Data2Vec v1(make_counting, Data2VecOptions().targets(TargetOptions().top_k_layers(2)));
  Data2Vec v2(make_counting, v2_options());
  auto has_prefix = [](Data2Vec& m, const std::string& prefix) {
    for (const auto& item : m->named_parameters())
      if (item.key().rfind(prefix, 0) == 0) return true;
    return false;
  };
  EXPECT_TRUE(has_prefix(v1, "head."));
  EXPECT_FALSE(has_prefix(v1, "decoder."));
  EXPECT_TRUE(has_prefix(v2, "decoder.blocks.0.conv."));
  EXPECT_TRUE(has_prefix(v2, "decoder.proj."));
  EXPECT_FALSE(has_prefix(v2, "head."));
}

TEST(Data2VecV2, AnEncoderWithoutKeptEncodingStillTrainsWithV1Only) {
  auto make = [] { return std::make_shared<V1OnlyEncoderImpl>(); };
  EXPECT_THROW({ Data2Vec rejected(make, v2_options().targets(TargetOptions().top_k_layers(1))); },
               c10::Error);
  Data2Vec v1(make, Data2VecOptions().targets(TargetOptions().top_k_layers(1)));
  auto gen = at::detail::createCPUGenerator(1);
  const auto out = v1->forward(EncoderInput{torch::randn({kB, kT, kF}), {}}, gen);
  EXPECT_TRUE(out.loss.defined());
  EXPECT_EQ(out.mask.size(0), kB);
}

TEST(Data2VecV2, KeptEncodingOfEveryPositionEqualsTheFullEncoding) {
  torch::manual_seed(1);
  ToyEncoderImpl toy(toy_options());
  toy.eval();
  const EncoderInput batch{torch::randn({kB, kT, kF}), make_padding()};
  const auto ids = torch::arange(kT).repeat({kB * 2, 1});  // everything kept, 2 copies
  const auto kept = toy.extract_kept_features(batch, ids, 2).x;
  const auto full = toy.extract_features(batch, {}).x;
  const auto real = ~batch.padding_mask.unsqueeze(-1);
  EXPECT_TRUE(tensors_close("copy 0", (kept.index({torch::arange(0, 2 * kB, 2)}) * real),
                            full * real, 1e-5));
  EXPECT_TRUE(tensors_close("copy 1", (kept.index({torch::arange(1, 2 * kB, 2)}) * real),
                            full * real, 1e-5));
}

}  // namespace
}  // namespace data2vec
