// kill -9 at random moments: a real `data2vec pretrain` process (the toy run, a checkpoint every
// step) is killed with SIGKILL again and again, at seeded random moments: any time after it
// starts (loading, resuming, stepping), shortly after a new checkpoint appears, and inside a
// checkpoint write (as soon as a step_N.tmp directory exists). After every kill the newest
// checkpoint and `last` must load and verify, `last` must never go back (it may lag the newest
// step_N by one: a kill between the rename and the link); finally `--resume` must finish the run
// with checkpoint files byte-identical to an unbroken run's.
//
// A trial's wait is bounded in steps as well as in time (a random 1..kMaxAdvance new checkpoints,
// then a random part of one step), so every trial lands before the run ends however fast the
// machine steps, and still at a random point of a step.
//
// The seed is printed; D2V_KILL_SEED=N repeats a sequence, D2V_KILL_TRIALS=N changes the count.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "data2vec/io/config.h"
#include "data2vec/io/files.h"
#include "data2vec/train/checkpoint.h"
#include "pretrain_support.h"
#include "support.h"

namespace fs = std::filesystem;
using namespace data2vec;
using Clock = std::chrono::steady_clock;

namespace {

// `data2vec pretrain --config CONFIG --out OUT --resume` (from step 0 when OUT has no checkpoint
// yet), its output to `log`.
pid_t start_pretrain(const std::string& config_path, const std::string& out,
                     const std::string& log) {
  const pid_t child = fork();
  if (child == 0) {
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    dup2(fd, 1);
    dup2(fd, 2);
    execl(DATA2VEC_BINARY, DATA2VEC_BINARY, "pretrain", "--config", config_path.c_str(), "--out",
          out.c_str(), "--resume", static_cast<char*>(nullptr));
    _exit(127);
  }
  return child;
}

// The newest complete step_<N> of a run (-1: none), and whether a step_<N>.tmp is there.
struct CheckpointScan {
  int64_t newest = -1, last_step = -1;
  bool writing = false;
};

CheckpointScan scan(const std::string& run) {
  CheckpointScan s;
  std::error_code ec;
  for (fs::directory_iterator it(run + "/checkpoints", ec), end; !ec && it != end;
       it.increment(ec)) {
    const auto name = it->path().filename().string();
    if (name.rfind("step_", 0) != 0) continue;
    if (name.size() > 4 && name.compare(name.size() - 4, 4, ".tmp") == 0) {
      s.writing = true;
    } else {
      s.newest = std::max<int64_t>(s.newest, std::atoll(name.c_str() + 5));
    }
  }
  return s;
}

const char* kCompared[] = {"model.safetensors", "optimizer.pt", "rng.safetensors", "config.yaml"};

int env_int(const char* name, int fallback) {
  const char* value = std::getenv(name);
  return value && *value ? std::atoi(value) : fallback;
}

}  // namespace

TEST(KillTest, SigkillAtRandomMomentsNeverLosesACheckpointAndResumesToTheSameBytes) {
  const auto work = data2vec::testing::make_temp_dir("kill-test");
  constexpr int64_t kSteps = 120;
  auto config = data2vec::testing::toy_run_config(kSteps);
  config.train.threads = 1;
  config.train.num_workers = 0;
  config.checkpoint.every = 1;  // most of the time is spent in or near a checkpoint write
  config.checkpoint.keep = 2;
  const auto config_path = work + "/toy.yaml";
  std::ofstream(config_path) << io::to_yaml(config);
  const auto log = work + "/log.txt";

  // The unbroken run; its duration bounds one step's time (start-up included).
  const auto straight = work + "/straight";
  int64_t step_us = 0;
  {
    const auto started = Clock::now();
    const pid_t child = start_pretrain(config_path, straight, log);
    int status = 0;
    waitpid(child, &status, 0);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << io::read_file(log);
    step_us = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - started).count() /
              kSteps;
  }

  const unsigned seed = unsigned(env_int("D2V_KILL_SEED", 20261130));
  const int trials = env_int("D2V_KILL_TRIALS", 12);
  std::mt19937 rng(seed);
  std::printf("kill test: seed %u, %d trials\n", seed, trials);
  const auto run = work + "/killed";
  // The most checkpoints one trial may add before its kill: trials * (kMaxAdvance + 1) stays
  // well under kSteps for the default 12 trials.
  constexpr int64_t kMaxAdvance = 6;
  int64_t newest = -1, last_step = -1;
  int kills = 0, in_write = 0;
  for (int trial = 0; trial < trials; ++trial) {
    const int mode = trial % 3;  // 0: any moment, 1: after a new checkpoint, 2: inside a write
    const pid_t child = start_pretrain(config_path, run, log);
    ASSERT_GT(child, 0);
    const auto started = Clock::now();
    const auto deadline = started + std::chrono::seconds(120);
    const auto delay_ms = std::uniform_int_distribution<int>(0, 1500)(rng);
    const auto after_event_us = std::uniform_int_distribution<int>(0, mode == 1 ? 300000 : 200)(rng);
    const auto advance = std::uniform_int_distribution<int64_t>(1, kMaxAdvance)(rng);
    const auto within_step_us = std::uniform_int_distribution<int64_t>(0, step_us)(rng);
    int status = 0;
    bool exited = false;
    auto child_exited = [&] { return exited || (exited = waitpid(child, &status, WNOHANG) == child); };
    // Sleeps until `until` or until the run exits; or, when the run has written `advance` new
    // checkpoints first, a random part of one more step.
    auto wait_bounded = [&](Clock::time_point until) {
      while (Clock::now() < until && !child_exited()) {
        if (scan(run).newest >= newest + advance) {
          std::this_thread::sleep_for(std::chrono::microseconds(within_step_us));
          return;
        }
        std::this_thread::sleep_for(std::chrono::microseconds(200));
      }
    };
    if (mode == 0) {
      wait_bounded(started + std::chrono::milliseconds(delay_ms));
    } else {
      // Wait for the event: a checkpoint newer than the last one seen, or a write in progress.
      while (Clock::now() < deadline && !child_exited()) {
        const auto s = scan(run);
        if (mode == 1 ? s.newest > newest : s.writing) break;
        std::this_thread::sleep_for(std::chrono::microseconds(50));
      }
      if (mode == 1) {
        wait_bounded(Clock::now() + std::chrono::microseconds(after_event_us));
      } else {
        std::this_thread::sleep_for(std::chrono::microseconds(after_event_us));
      }
    }
    if (!child_exited()) ::kill(child, SIGKILL);
    if (!exited) waitpid(child, &status, 0);
    // The run may have finished between the last look and the kill: then it must have succeeded.
    if (WIFEXITED(status)) {
      ASSERT_EQ(WEXITSTATUS(status), 0) << io::read_file(log);
      std::printf("trial %d: the run finished before the kill\n", trial);
      break;
    }
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    ++kills;

    // What the kill left: the newest complete step_N, and `last` (what --resume loads).
    const auto s = scan(run);
    in_write += s.writing ? 1 : 0;
    std::printf("trial %d (mode %d): killed %s, newest checkpoint step_%lld\n", trial, mode,
                s.writing ? "inside a checkpoint write" : "outside a checkpoint write",
                static_cast<long long>(s.newest));
    if (s.newest >= 0) {
      const auto dir = run + "/checkpoints/step_" + std::to_string(s.newest);
      EXPECT_EQ(data2vec::testing::error_of([&] { train::read_checkpoint(dir); }), "") << dir;
      // `last` may lag the newest step_N by one (a kill between the rename and the link), never
      // more, and never goes back.
      int64_t step = -1;
      EXPECT_EQ(data2vec::testing::error_of([&] {
                  step = train::read_checkpoint(run).trainer_state.at("step").get<int64_t>();
                }),
                "")
          << "checkpoints/last does not load after trial " << trial;
      EXPECT_GE(step, last_step) << "checkpoints/last went back";
      EXPECT_GE(step, s.newest - 1) << "checkpoints/last lags the newest checkpoint";
      last_step = std::max(last_step, step);
    }
    newest = std::max(newest, s.newest);
  }
  EXPECT_GE(kills, trials / 2) << "too few kills landed before the run ended";
  EXPECT_GE(in_write, 1) << "no kill landed inside a checkpoint write";
  std::printf("kill test: %d kills, %d inside a checkpoint write, newest step %lld\n", kills,
              in_write, static_cast<long long>(newest));

  // Finish with --resume: the same bytes as the unbroken run.
  const pid_t child = start_pretrain(config_path, run, log);
  int status = 0;
  waitpid(child, &status, 0);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << io::read_file(log);
  const auto final_step = "/checkpoints/step_" + std::to_string(kSteps) + "/";
  for (const char* file : kCompared) {
    EXPECT_TRUE(io::read_file(straight + final_step + file) == io::read_file(run + final_step + file))
        << file << " differs from the unbroken run's";
  }
  EXPECT_FALSE(scan(run).writing) << "a step_N.tmp outlived the resumed run";
}
