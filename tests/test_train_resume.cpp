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

#include "data2vec/io/config.h"
#include "data2vec/train/trainer.h"
#include "pretrain_support.h"
#include "support.h"

namespace fs = std::filesystem;
using namespace data2vec;
using data2vec::testing::last_model_bytes;
using data2vec::testing::run_pretraining;
using data2vec::testing::toy_run_config;

TEST(Resume, HalfThenResumeEqualsStraightByteForByte) {
  const auto straight = data2vec::testing::make_temp_dir("straight");
  const auto halves = data2vec::testing::make_temp_dir("halves");
  EXPECT_EQ(run_pretraining(toy_run_config(20), straight, false).steps_done, 20);
  EXPECT_EQ(run_pretraining(toy_run_config(20), halves, false, /*stop_at=*/10).steps_done, 10);
  const auto result = run_pretraining(toy_run_config(20), halves, true);
  EXPECT_EQ(result.steps_done, 20);
  EXPECT_EQ(last_model_bytes(straight), last_model_bytes(halves));
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
  auto config = toy_run_config(5);
  run_pretraining(config, a, false);
  config.train.seed = 2;
  run_pretraining(config, b, false);
  EXPECT_NE(last_model_bytes(a), last_model_bytes(b));
}

TEST(Resume, KilledWithSigkillResumesToTheSameBytes) {
  const auto straight = data2vec::testing::make_temp_dir("straight");
  const auto killed = data2vec::testing::make_temp_dir("killed");
  const auto config_path = killed + "/config.in.yaml";
  auto config = toy_run_config(60);
  std::ofstream(config_path) << io::to_yaml(config);
  run_pretraining(config, straight, false);

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

  const auto resumed = run_pretraining(config, killed, true);
  EXPECT_EQ(resumed.steps_done, 60);
  EXPECT_EQ(last_model_bytes(straight), last_model_bytes(killed));
}
