// The trainer with data2vec 2.0 (model.algorithm v2): clone_batch copies per example, throughput
// counted per original example, checkpoints that resume to the same bytes, and v1 names kept.
#include <filesystem>
#include <fstream>

#include "data2vec/app/builders.h"
#include "data2vec/train/trainer.h"
#include "data2vec/vision/encoder.h"
#include "pretrain_support.h"
#include "support.h"

using namespace data2vec;
using data2vec::testing::last_model_bytes;
using data2vec::testing::run_pretraining;

namespace {

// The trainer tests' toy run with 2.0 on: 3 copies per example, a small decoder.
io::Config v2_config(int64_t max_steps) {
  io::Config c = data2vec::testing::toy_run_config(max_steps);
  c.model.algorithm = "v2";
  c.model.clone_batch = 3;
  c.model.decoder_dim = 16;
  c.model.decoder_layers = 2;
  c.optim.warmup_steps = 2;
  c.train.num_workers = 1;
  c.log.every = 2;
  c.checkpoint.every = 4;
  return c;
}

}  // namespace

TEST(TrainV2, ConfigBuildsTheDecoderAndClones) {
  const auto model = app::make_model(v2_config(4));
  EXPECT_EQ(model->options().algorithm(), Algorithm::kV2);
  EXPECT_EQ(model->options().clone_batch(), 3);
  ASSERT_TRUE(model->decoder());
  EXPECT_FALSE(model->head());
  EXPECT_EQ(model->decoder()->options().dim(), 16);
  EXPECT_EQ(model->decoder()->options().layers(), 2);
  EXPECT_EQ(model->decoder()->options().kernel(), 7);  // the 1-D default where not set
  auto v1 = v2_config(4);
  v1.model.algorithm = "v1";
  EXPECT_EQ(app::make_model(v1)->options().algorithm(), Algorithm::kV1);
  auto bad = v2_config(4);
  bad.model.decoder_kernel = 4;
  EXPECT_THROW(io::validate(bad), std::invalid_argument);
}

// model.position_encoding sincos / model.depth_scaled_init false (data2vec 2.0's image encoder)
// reach the vision encoder: a frozen sin-cos table and no relative bias.
TEST(TrainV2, PositionEncodingKeysBuildTheVisionEncoder) {
  io::Config c;
  c.model.modality = "vision";
  c.model.preset = "fmnist-mini";
  c.model.top_k_layers = 4;
  c.model.algorithm = "v2";
  c.model.position_encoding = "sincos";
  c.model.depth_scaled_init = false;
  const auto model = app::make_model(c);
  const auto student = std::dynamic_pointer_cast<vision::VisionEncoderImpl>(model->student());
  ASSERT_TRUE(student);
  ASSERT_TRUE(student->embeddings->position_embeddings.defined());
  EXPECT_FALSE(student->embeddings->position_embeddings.requires_grad());
  EXPECT_TRUE(student->encoder->position_biases.empty());
  EXPECT_FALSE(student->options().depth_scaled_init());
  c.model.position_encoding = "relative";
  const auto relative = std::dynamic_pointer_cast<vision::VisionEncoderImpl>(
      app::make_model(c)->student());
  EXPECT_FALSE(relative->embeddings->position_embeddings.defined());
  EXPECT_EQ(relative->encoder->position_biases.size(), 1u);
  c.model.preset = "hf";
  c.model.position_encoding = "sincos";
  const auto message = data2vec::testing::error_of([&] { app::make_model(c); });
  EXPECT_NE(message.find("model.position_encoding"), std::string::npos) << message;
}

TEST(TrainV2, PretrainsAndResumesToTheSameBytes) {
  const auto straight = data2vec::testing::make_temp_dir("v2_straight");
  const auto halves = data2vec::testing::make_temp_dir("v2_halves");
  const auto result = run_pretraining(v2_config(8), straight, false);
  EXPECT_EQ(result.steps_done, 8);
  EXPECT_TRUE(result.stopped_because.empty()) << result.stopped_because;
  EXPECT_TRUE(std::isfinite(result.last_loss));
  EXPECT_EQ(run_pretraining(v2_config(8), halves, false, /*stop_at=*/4).steps_done, 4);
  EXPECT_EQ(run_pretraining(v2_config(8), halves, true).steps_done, 8);
  EXPECT_EQ(last_model_bytes(straight), last_model_bytes(halves));

  // The masked fraction is over the copies' real steps: every row masks round(mask_ratio x its
  // own length), so the batch's fraction is mask_ratio up to the rounding.
  std::ifstream log(straight + "/metrics.jsonl");
  std::string line;
  int records = 0;
  while (std::getline(log, line)) {
    const auto record = nlohmann::json::parse(line);
    EXPECT_NEAR(record.at("masked_frac").get<double>(), 0.5, 0.03);
    EXPECT_GT(record.at("samples_per_s").get<double>(), 0.0);
    ++records;
  }
  EXPECT_EQ(records, 4);
}

TEST(TrainV2, MasksDrawnInGroupsOfPaddedExamplesTrain) {
  // train.mask_group draws each group's masks apart; with variable lengths the groups' shortest
  // rows differ, and the joined mask must still gather into a rectangle.
  auto config = v2_config(2);
  config.train.mask_group = 2;
  const auto run_dir = data2vec::testing::make_temp_dir("v2_mask_group");
  train::PretrainResult result;
  EXPECT_NO_THROW(result = run_pretraining(config, run_dir, false));
  EXPECT_EQ(result.steps_done, 2);
  EXPECT_TRUE(result.stopped_because.empty()) << result.stopped_because;
}
