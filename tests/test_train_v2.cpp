// The trainer with data2vec 2.0 (model.algorithm v2): clone_batch copies per example, throughput
// counted per original example, checkpoints that resume to the same bytes, and v1 names kept.
#include <filesystem>
#include <fstream>

#include "data2vec/app/builders.h"
#include "data2vec/io/files.h"
#include "data2vec/train/trainer.h"
#include "support.h"

using namespace data2vec;

namespace {

io::Config v2_config(int64_t max_steps) {
  io::Config c;
  c.model.modality = "toy";
  c.model.preset = "micro";
  c.model.algorithm = "v2";
  c.model.clone_batch = 3;
  c.model.decoder_dim = 16;
  c.model.decoder_layers = 2;
  c.model.top_k_layers = 2;
  c.model.layer_result = "ffn";
  c.model.target_layer_norm = "instance_norm";
  c.model.target_final_norm = "none";
  c.model.loss_beta = 0;
  c.model.loss_scale = 0;
  c.model.mask_ratio = 0.5;
  c.ema.decay_start = 0.99;
  c.ema.decay_end = 0.999;
  c.ema.anneal_steps = 40;
  c.optim.lr = 1e-3;
  c.optim.warmup_steps = 2;
  c.train.max_steps = max_steps;
  c.train.batch_size = 8;
  c.train.threads = 2;
  c.train.num_workers = 1;
  c.train.device = "cpu";
  c.data.dataset = "toy-variable";  // padding on every path
  c.data.limit = 64;
  c.log.every = 2;
  c.log.tensorboard = false;
  c.checkpoint.every = 4;
  return c;
}

train::PretrainResult run(const io::Config& config, const std::string& dir, bool resume,
                          int64_t stop_at = 0) {
  train::PretrainJob job;
  job.stop_at_step = stop_at;
  job.config = config;
  job.run_dir = dir;
  job.resume = resume;
  job.model = app::make_model(config);
  job.train_data = app::make_pretrain_dataset(config);
  return train::pretrain(job);
}

std::string model_bytes(const std::string& run_dir) {
  return io::read_file(run_dir + "/checkpoints/last/model.safetensors");
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

TEST(TrainV2, PretrainsAndResumesToTheSameBytes) {
  const auto straight = data2vec::testing::make_temp_dir("v2_straight");
  const auto halves = data2vec::testing::make_temp_dir("v2_halves");
  const auto result = run(v2_config(8), straight, false);
  EXPECT_EQ(result.steps_done, 8);
  EXPECT_TRUE(result.stopped_because.empty()) << result.stopped_because;
  EXPECT_TRUE(std::isfinite(result.last_loss));
  EXPECT_EQ(run(v2_config(8), halves, false, /*stop_at=*/4).steps_done, 4);
  EXPECT_EQ(run(v2_config(8), halves, true).steps_done, 8);
  EXPECT_EQ(model_bytes(straight), model_bytes(halves));

  // The masked fraction is over the copies' real steps: mask_ratio of the SHORTEST example in the
  // batch (every row masks the same count), so at most mask_ratio with variable lengths.
  std::ifstream log(straight + "/metrics.jsonl");
  std::string line;
  int records = 0;
  while (std::getline(log, line)) {
    const auto record = nlohmann::json::parse(line);
    EXPECT_LE(record.at("masked_frac").get<double>(), 0.5 + 1e-9);
    EXPECT_GT(record.at("masked_frac").get<double>(), 0.25);
    EXPECT_GT(record.at("samples_per_s").get<double>(), 0.0);
    ++records;
  }
  EXPECT_EQ(records, 4);
}
