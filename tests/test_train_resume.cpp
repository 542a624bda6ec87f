// Exact resume: N steps, a checkpoint, N more steps after a restart give the same bytes as 2N
// steps straight. Also a run killed with SIGKILL mid-training resumes to the same bytes.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "data2vec/app/builders.h"
#include "data2vec/io/files.h"
#include "data2vec/train/trainer.h"
#include "support.h"

namespace fs = std::filesystem;
using namespace data2vec;

namespace {

io::Config small_config(int64_t max_steps) {
  io::Config c;
  c.model.modality = "toy";
  c.model.preset = "micro";
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
  c.optim.warmup_steps = 5;
  c.train.max_steps = max_steps;
  c.train.batch_size = 8;
  c.train.threads = 2;
  c.train.num_workers = 2;
  c.train.device = "cpu";
  c.data.dataset = "toy-variable";  // padding on every path
  c.data.limit = 64;
  c.log.every = 3;
  c.log.tensorboard = false;
  c.checkpoint.every = 5;
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

TEST(Resume, HalfThenResumeEqualsStraightByteForByte) {
  const auto straight = data2vec::testing::make_temp_dir("straight");
  const auto halves = data2vec::testing::make_temp_dir("halves");
  EXPECT_EQ(run(small_config(20), straight, false).steps_done, 20);
  EXPECT_EQ(run(small_config(20), halves, false, /*stop_at=*/10).steps_done, 10);
  const auto result = run(small_config(20), halves, true);
  EXPECT_EQ(result.steps_done, 20);
  EXPECT_EQ(model_bytes(straight), model_bytes(halves));
  // And the metrics log continues without duplicates.
  std::ifstream log(halves + "/metrics.jsonl");
  std::string line;
  std::vector<int64_t> steps;
  while (std::getline(log, line)) steps.push_back(nlohmann::json::parse(line).at("step"));
  EXPECT_EQ(steps, (std::vector<int64_t>{3, 6, 9, 10, 12, 15, 18, 20}));
}

TEST(Resume, DifferentSeedGivesDifferentBytes) {
  // Guards the test above against passing because nothing changes.
  const auto a = data2vec::testing::make_temp_dir("seed_a");
  const auto b = data2vec::testing::make_temp_dir("seed_b");
  auto config = small_config(5);
  run(config, a, false);
  config.train.seed = 2;
  run(config, b, false);
  EXPECT_NE(model_bytes(a), model_bytes(b));
}

TEST(Resume, KilledWithSigkillResumesToTheSameBytes) {
  const auto straight = data2vec::testing::make_temp_dir("straight");
  const auto killed = data2vec::testing::make_temp_dir("killed");
  const auto config_path = killed + "/config.in.yaml";
  auto config = small_config(60);
  std::ofstream(config_path) << io::to_yaml(config);
  run(config, straight, false);

  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    const int devnull = ::open("/dev/null", O_WRONLY);
    dup2(devnull, 1);
    dup2(devnull, 2);
    execl(DATA2VEC_BINARY, DATA2VEC_BINARY, "pretrain", "--config", config_path.c_str(), "--out",
          killed.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  // Kill it as soon as its second checkpoint is there, mid-run.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (!fs::exists(killed + "/checkpoints/step_10/checkpoint.json") &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ::kill(child, SIGKILL);
  int status = 0;
  waitpid(child, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status)) << "the run finished before it could be killed";

  const auto resumed = run(config, killed, true);
  EXPECT_EQ(resumed.steps_done, 60);
  EXPECT_EQ(model_bytes(straight), model_bytes(killed));
}
