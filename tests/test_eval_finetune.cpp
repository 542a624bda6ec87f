// Fine-tuning: layer ids, lr scales and schedule, label-fraction subsets, and an end-to-end run
// that learns a synthetic task the untrained encoder cannot solve.
#include <cmath>
#include <map>
#include <set>

#include "data2vec/core/toy_encoder.h"
#include "data2vec/eval/finetune.h"
#include "support.h"

namespace {

using namespace data2vec;
using namespace data2vec::eval;

TEST(Finetune, LayerIdFromName) {
  const int64_t L = 4;
  EXPECT_EQ(layer_id_from_name("embed.weight", L), 0);
  EXPECT_EQ(layer_id_from_name("mask_token", L), 0);
  EXPECT_EQ(layer_id_from_name("position_embeddings", L), 0);
  EXPECT_EQ(layer_id_from_name("embeddings.patch_embeddings.projection.weight", L), 0);
  EXPECT_EQ(layer_id_from_name("feature_extractor.conv_layers.3.conv.weight", L), 0);
  EXPECT_EQ(layer_id_from_name("feature_projection.projection.weight", L), 0);
  EXPECT_EQ(layer_id_from_name("encoder.pos_conv_embed.conv.weight", L), 0);
  EXPECT_EQ(layer_id_from_name("layers.0.attention.query.weight", L), 1);
  EXPECT_EQ(layer_id_from_name("layers.3.feed_forward.fc1.bias", L), 4);
  EXPECT_EQ(
      layer_id_from_name("encoder.layer.2.attention.attention.relative_position_bias.table", L), 3);
  EXPECT_EQ(layer_id_from_name("final_norm.weight", L), L + 1);
  EXPECT_EQ(layer_id_from_name("encoder.layer_norm.bias", L), L + 1);
  EXPECT_EQ(layer_id_from_name("sublayers.1.weight", L), L + 1);
  EXPECT_THROW(layer_id_from_name("layers.4.fc.weight", L), c10::Error);

  EXPECT_DOUBLE_EQ(layer_lr_scale(L + 1, L, 0.65), 1.0);
  EXPECT_DOUBLE_EQ(layer_lr_scale(L, L, 0.65), 0.65);
  EXPECT_DOUBLE_EQ(layer_lr_scale(0, L, 0.65), std::pow(0.65, 5));
}

TEST(Finetune, ToyEncoderParametersAllGetAGroup) {
  ToyEncoder encoder(ToyEncoderOptions().depth(3));
  std::map<int64_t, int> per_id;
  for (const auto& p : encoder->named_parameters()) ++per_id[layer_id_from_name(p.key(), 3)];
  // embed, mask token, positions -> 0; three blocks -> 1..3; final norm -> 4.
  EXPECT_EQ(per_id.size(), 5u);
  EXPECT_EQ(per_id[0], 4);  // embed.weight, embed.bias, mask_token, position_embeddings
  EXPECT_EQ(per_id[4], 2);  // final_norm weight and bias
  EXPECT_EQ(per_id[1], per_id[3]);
}

TEST(Finetune, WarmupCosineLr) {
  EXPECT_DOUBLE_EQ(warmup_cosine_lr(0, 110, 10, 1.0, 0.0), 0.1);
  EXPECT_DOUBLE_EQ(warmup_cosine_lr(9, 110, 10, 1.0, 0.0), 1.0);
  EXPECT_DOUBLE_EQ(warmup_cosine_lr(10, 110, 10, 1.0, 0.0), 1.0);
  EXPECT_NEAR(warmup_cosine_lr(60, 110, 10, 1.0, 0.1), 0.55, 1e-12);
  EXPECT_NEAR(warmup_cosine_lr(109, 110, 10, 1.0, 0.1), 0.1, 1e-3);
  EXPECT_DOUBLE_EQ(warmup_cosine_lr(110, 110, 10, 1.0, 0.1), 0.1);
  EXPECT_DOUBLE_EQ(warmup_cosine_lr(0, 10, 0, 2.0, 0.0), 2.0);
}

std::map<int64_t, size_t> class_counts(const std::vector<int64_t>& labels,
                                       const std::vector<size_t>& subset) {
  std::map<int64_t, size_t> counts;
  for (size_t i : subset) ++counts[labels[i]];
  return counts;
}

TEST(Finetune, LabelFractionSubsetIsBalancedAndExact) {
  std::vector<int64_t> labels;
  for (int i = 0; i < 500; ++i) labels.push_back(i % 5);
  auto subset = label_fraction_subset(labels, 0.1, 3);
  ASSERT_EQ(subset.size(), 50u);
  for (const auto& [c, n] : class_counts(labels, subset)) EXPECT_EQ(n, 10u) << "class " << c;
  EXPECT_TRUE(std::is_sorted(subset.begin(), subset.end()));
  EXPECT_EQ(std::set<size_t>(subset.begin(), subset.end()).size(), subset.size());
  EXPECT_EQ(label_fraction_subset(labels, 0.1, 3), subset);
  EXPECT_NE(label_fraction_subset(labels, 0.1, 4), subset);
  EXPECT_EQ(label_fraction_subset(labels, 1.0, 3).size(), 500u);
  EXPECT_EQ(label_fraction_subset(labels, 0.001, 3).size(), 1u);

  // Uneven classes (3, 50, 50, 50) and unlabelled rows: 50% of 153 labelled -> 77 = 3 + 25 + 25 +
  // 24 in some order; the small class gives all it has.
  std::vector<int64_t> uneven(3, 0);
  for (int c = 1; c <= 3; ++c) uneven.insert(uneven.end(), 50, c);
  uneven.insert(uneven.end(), 20, -1);
  auto half = label_fraction_subset(uneven, 0.5, 0);
  ASSERT_EQ(half.size(), 77u);
  auto counts = class_counts(uneven, half);
  EXPECT_EQ(counts.count(-1), 0u);
  EXPECT_EQ(counts[0], 3u);
  std::multiset<size_t> big{counts[1], counts[2], counts[3]};
  EXPECT_EQ(big, (std::multiset<size_t>{24, 25, 25}));

  EXPECT_THROW(label_fraction_subset(labels, 0.0, 0), c10::Error);
  EXPECT_THROW(label_fraction_subset(std::vector<int64_t>(4, -1), 0.5, 0), c10::Error);
}

// Sequences [T,F] of N(0,1) with label = (mean over time of feature 0 > 0); `bad` throw.
class SignDataset : public Dataset {
 public:
  SignDataset(int64_t n, uint64_t seed, std::set<size_t> bad = {}, int64_t length = 8)
      : bad_(std::move(bad)) {
    auto gen = at::detail::createCPUGenerator(seed);
    x_ = torch::randn({n, length, 4}, gen);
    y_ = x_.select(2, 0).mean(1).gt(0).to(torch::kLong);
  }
  size_t size() const override { return static_cast<size_t>(x_.size(0)); }
  Example get(size_t i, uint64_t) const override {
    if (bad_.count(i)) throw BadSample("sign_" + std::to_string(i) + ".bin: corrupt");
    const auto i64 = static_cast<int64_t>(i);
    return {x_[i64], y_[i64].item<int64_t>()};
  }
  int64_t num_classes() const override { return 2; }

 private:
  torch::Tensor x_;  // [N,T,F]
  torch::Tensor y_;  // [N]
  std::set<size_t> bad_;
};

std::shared_ptr<ToyEncoderImpl> small_encoder() {
  torch::manual_seed(5);
  return std::make_shared<ToyEncoderImpl>(
      ToyEncoderOptions().input_dim(4).dim(32).depth(2).num_heads(4).mlp_dim(64).max_len(8));
}

TEST(Finetune, LearnsWhatTheUntrainedEncoderCannot) {
  SignDataset train(256, 1), test(256, 2);
  auto options = FinetuneOptions().epochs(8).batch_size(32).lr(3e-3).warmup_epochs(1).seed(0);
  auto untrained = finetune(small_encoder(), train, test, FinetuneOptions(options).epochs(0));
  EXPECT_EQ(untrained.steps, 0);

  auto encoder = small_encoder();
  auto before = encoder->layers[0]->attention->query->weight.clone();
  int64_t hook_calls = 0;
  double first_lr = -1;
  int64_t last_step = 0;
  std::set<int64_t> totals;
  auto r =
      finetune(encoder, train, test, FinetuneOptions(options).on_step([&](const FinetuneStep& s) {
        if (hook_calls++ == 0) first_lr = s.lr;
        last_step = s.step;
        totals.insert(s.total_steps);
      }));
  EXPECT_EQ(r.steps, 8 * 8);
  EXPECT_EQ(hook_calls, 64);
  EXPECT_EQ(last_step, 64);
  EXPECT_EQ(totals, std::set<int64_t>{64});  // known from the first step: progress bars use it
  EXPECT_NEAR(first_lr, 3e-3 / 8, 1e-12);
  EXPECT_EQ(r.train_examples, 256);
  EXPECT_EQ(r.num_skipped, 0);
  EXPECT_FALSE(encoder->is_training());
  EXPECT_FALSE(torch::allclose(before, encoder->layers[0]->attention->query->weight));
  EXPECT_GT(r.test_acc, 0.85);
  EXPECT_GT(r.test_acc, untrained.test_acc + 0.15);
  EXPECT_GT(r.train_acc, 0.85);
}

TEST(Finetune, ClassificationLossIsTheSmoothedCrossEntropyOfLabelledRows) {
  torch::manual_seed(3);
  const auto logits = torch::randn({5, 4}) * 3;
  const auto labels = torch::tensor({2, 0, -1, 3, 1}, torch::kLong);
  const auto log_p = torch::log_softmax(logits.to(torch::kDouble), 1);
  for (const double s : {0.0, 0.1, 0.5}) {
    double expected = 0;
    int labelled = 0;
    for (int64_t i = 0; i < 5; ++i) {
      const int64_t y = labels[i].item<int64_t>();
      if (y < 0) continue;
      expected += (1 - s) * -log_p[i][y].item<double>() + s * -log_p[i].mean().item<double>();
      ++labelled;
    }
    expected /= labelled;
    EXPECT_NEAR(classification_loss(logits, labels, s).item<double>(), expected, 1e-5) << s;
  }
}

TEST(Finetune, LabelSmoothingKeepsTheTrainingLossAboveTheTargetsEntropy) {
  // Two classes, s = 0.9: the target is (0.55, 0.45) and no head gets its cross-entropy below
  // that distribution's entropy, 0.688; without smoothing the same run goes well below it.
  SignDataset train(256, 1), test(64, 2);
  const auto options = FinetuneOptions().epochs(8).batch_size(32).lr(3e-3).seed(0);
  const double entropy = -(0.55 * std::log(0.55) + 0.45 * std::log(0.45));
  const auto plain = finetune(small_encoder(), train, test, options);
  const auto smoothed =
      finetune(small_encoder(), train, test, FinetuneOptions(options).label_smoothing(0.9));
  EXPECT_LT(plain.final_loss, entropy - 0.2);
  EXPECT_GT(smoothed.final_loss, entropy - 1e-6);
  EXPECT_THROW(finetune(small_encoder(), train, test, FinetuneOptions(options).label_smoothing(1)),
               c10::Error);
  EXPECT_THROW(
      finetune(small_encoder(), train, test, FinetuneOptions(options).label_smoothing(-0.1)),
      c10::Error);
}

// Token ids cannot be blended: mixup must refuse them, naming why.
class IdDataset : public Dataset {
 public:
  size_t size() const override { return 32; }
  Example get(size_t i, uint64_t) const override {
    return {torch::zeros({8, 4}, torch::kLong), static_cast<int64_t>(i % 2)};
  }
  int64_t num_classes() const override { return 2; }
};

TEST(Finetune, MixupBlendsInputsOnlyOnceTheEncoderTrains) {
  SignDataset train(128, 1), test(32, 2);
  const auto options = FinetuneOptions().epochs(2).batch_size(32).lr(3e-3).seed(4);
  const auto run = [&](const FinetuneOptions& o) {
    return finetune(small_encoder(), train, test, o);
  };
  // Head-only epochs see clean inputs: the same run with and without mixup, bit for bit.
  const auto head_only = FinetuneOptions(options).head_only_epochs(2);
  EXPECT_TRUE(torch::equal(run(head_only).head->weight,
                           run(FinetuneOptions(head_only).mixup(0.8)).head->weight));
  // Once the encoder trains, the mixed batches change what is learnt; the same seed repeats it.
  const auto plain = run(options);
  const auto mixed = run(FinetuneOptions(options).mixup(0.8));
  EXPECT_FALSE(torch::equal(plain.head->weight, mixed.head->weight));
  const auto again = run(FinetuneOptions(options).mixup(0.8));
  EXPECT_TRUE(torch::equal(mixed.head->weight, again.head->weight));
  EXPECT_GT(mixed.test_acc, 0.7);  // still learns the task
  EXPECT_THROW(run(FinetuneOptions(options).mixup(-1)), c10::Error);
  IdDataset ids;
  try {
    finetune(small_encoder(), ids, ids, FinetuneOptions(options).mixup(0.8));
    ADD_FAILURE() << "mixup of token ids did not throw";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("floating-point"), std::string::npos) << e.what();
  }
}

TEST(Finetune, LabelFractionAndBadSamples) {
  SignDataset train(200, 3, {0, 1, 2, 3}), test(40, 4, {7});
  auto r =
      finetune(small_encoder(), train, test,
               FinetuneOptions().label_fraction(0.25).epochs(2).batch_size(16).seed(1).bf16(true));
  // 196 readable labelled examples -> 49 chosen -> 4 batches per epoch.
  EXPECT_EQ(r.train_examples, 49);
  EXPECT_EQ(r.steps, 8);
  // 4 bad in the label pass, 1 bad in the test pass; the subset never holds a bad one.
  EXPECT_EQ(r.num_skipped, 5);
  EXPECT_EQ(r.head->weight.sizes(), (std::vector<int64_t>{2, 32}));
}

TEST(Finetune, GridPoolingFeedsTheHeadFourVectors) {
  // 4 positions = a 2 x 2 grid: the head reads the 4 quadrant vectors, 4 x 32 features.
  SignDataset train(256, 7, {}, 4), test(256, 8, {}, 4);
  const auto options = FinetuneOptions().epochs(8).batch_size(32).lr(3e-3).seed(0);
  auto r = finetune(small_encoder(), train, test, FinetuneOptions(options).pool(PoolMode::kGrid));
  EXPECT_EQ(r.head->weight.sizes(), (std::vector<int64_t>{2, 4 * 32}));
  EXPECT_GT(r.test_acc, 0.85);
  SignDataset odd(16, 9, {}, 8);  // 8 positions are no square grid: a clear error, no crash
  EXPECT_THROW(finetune(small_encoder(), odd, odd,
                        FinetuneOptions().epochs(1).batch_size(8).pool(PoolMode::kGrid)),
               c10::Error);
}

TEST(Finetune, HeadOnlyEpochsLeaveTheEncoderUntouched) {
  SignDataset train(64, 10), test(16, 11);
  const auto snapshot = [](ToyEncoderImpl& encoder) {
    std::vector<torch::Tensor> values;
    for (const auto& p : encoder.parameters()) values.push_back(p.detach().clone());
    return values;
  };
  const auto unchanged = [](const std::vector<torch::Tensor>& a,
                            const std::vector<torch::Tensor>& b) {
    for (size_t i = 0; i < a.size(); ++i) {
      if (!torch::equal(a[i], b[i])) return false;
    }
    return true;
  };
  auto options = FinetuneOptions().epochs(2).batch_size(16).warmup_epochs(0).lr(1e-2);
  auto frozen = small_encoder();
  const auto before = snapshot(*frozen);
  auto r = finetune(frozen, train, test, FinetuneOptions(options).head_only_epochs(2));
  EXPECT_EQ(r.steps, 8);
  EXPECT_TRUE(unchanged(before, snapshot(*frozen)));  // weights, biases and norms: all exact
  const auto untrained = finetune(small_encoder(), train, test, FinetuneOptions(options).epochs(0)
                                                                   .head_only_epochs(0));
  EXPECT_FALSE(torch::allclose(r.head->weight, untrained.head->weight));  // the head trained
  auto thawed = small_encoder();
  finetune(thawed, train, test, FinetuneOptions(options).head_only_epochs(1));
  EXPECT_FALSE(unchanged(before, snapshot(*thawed)));  // the second epoch trains the encoder
  EXPECT_THROW(finetune(small_encoder(), train, test, FinetuneOptions(options).head_only_epochs(3)),
               c10::Error);
}

TEST(Finetune, LayerDecayReachesTheOptimizer) {
  // decay 0.01, L = 2: the embedding's lr is 1e-6 x the head's, the final norm's is 1 x.
  SignDataset train(64, 5), test(16, 6);
  auto encoder = small_encoder();
  auto embed_before = encoder->embed->weight.clone();
  auto norm_before = encoder->final_norm->weight.clone();
  auto block_before = encoder->layers[1]->feed_forward->fc1->weight.clone();
  finetune(encoder, train, test,
           FinetuneOptions().epochs(1).batch_size(16).warmup_epochs(0).lr(1e-2).layer_decay(0.01));
  const double embed_step = (encoder->embed->weight - embed_before).abs().max().item<double>();
  const double block_step =
      (encoder->layers[1]->feed_forward->fc1->weight - block_before).abs().max().item<double>();
  const double norm_step = (encoder->final_norm->weight - norm_before).abs().max().item<double>();
  // Adam moves a weight by about lr_group per step (4 steps here).
  EXPECT_LT(embed_step, 1e-6);
  EXPECT_GT(block_step, 1e-5);  // layer 2 of 2: scale 0.01
  EXPECT_LT(block_step, 1e-3);
  EXPECT_GT(norm_step, 1e-3);
}

}  // namespace

TEST(Finetune, RandomShiftMovesEachImageAndFillsWithItsMinimum) {
  // Two 1x5x6 images with distinct pixel values, so every moved pixel can be traced back.
  auto images = torch::arange(2 * 30, torch::kFloat).reshape({2, 1, 5, 6}) + 1;
  images[1] *= -1;  // the second image's minimum is -60, not its border
  std::mt19937_64 rng(7);
  const auto moved = random_shift(images, 2, rng);
  ASSERT_EQ(moved.sizes(), images.sizes());
  // Recover each image's (dy, dx) from where its first surviving pixel landed, then check every
  // pixel against the shift by hand: inside, the source pixel; outside, the image's minimum.
  for (int64_t b = 0; b < 2; ++b) {
    const auto src = images[b][0], out = moved[b][0];
    const float fill = src.min().item<float>();
    bool found = false;
    for (int64_t dy = -2; dy <= 2 && !found; ++dy) {
      for (int64_t dx = -2; dx <= 2 && !found; ++dx) {
        bool match = true;
        for (int64_t y = 0; y < 5 && match; ++y) {
          for (int64_t x = 0; x < 6 && match; ++x) {
            const int64_t sy = y - dy, sx = x - dx;
            const bool inside = sy >= 0 && sy < 5 && sx >= 0 && sx < 6;
            const float want = inside ? src[sy][sx].item<float>() : fill;
            match = out[y][x].item<float>() == want;
          }
        }
        found = match;
      }
    }
    EXPECT_TRUE(found) << "image " << b << " is not a shift of its source by at most 2 pixels";
  }
  // Seeded: the same rng state gives the same shifts; over many draws some image moves.
  std::mt19937_64 again(7);
  EXPECT_TRUE(torch::equal(random_shift(images, 2, again), moved));
  std::mt19937_64 many(1);
  auto batch = images.repeat({16, 1, 1, 1});
  EXPECT_FALSE(torch::equal(random_shift(batch, 1, many), batch));
  EXPECT_TRUE(torch::equal(random_shift(images, 0, rng), images));
  EXPECT_THROW(random_shift(images, -1, rng), c10::Error);
  EXPECT_THROW(random_shift(images.flatten(1), 1, rng), c10::Error);
}

TEST(Finetune, ShiftAppliesOnlyOnceTheEncoderTrainsAndOnlyToImages) {
  // SignDataset's examples are sequences [T,F], not images [C,H,W].
  SignDataset train(64, 1), test(16, 2);
  const auto options = FinetuneOptions().epochs(1).batch_size(16).seed(2);
  try {
    finetune(small_encoder(), train, test, FinetuneOptions(options).shift(1));
    ADD_FAILURE() << "shifting sequences did not throw";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("images"), std::string::npos) << e.what();
  }
  // Head-only epochs read clean inputs: the shift is never drawn, the run is bit-identical.
  const auto head_only = FinetuneOptions(options).head_only_epochs(1);
  EXPECT_TRUE(torch::equal(
      finetune(small_encoder(), train, test, head_only).head->weight,
      finetune(small_encoder(), train, test, FinetuneOptions(head_only).shift(1)).head->weight));
}
