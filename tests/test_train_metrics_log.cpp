// metrics.jsonl: one parseable object per line, truncation on a fresh run, and a resumed run
// that drops the records past its checkpoint step.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "data2vec/train/metrics_log.h"
#include "support.h"

namespace {

using data2vec::train::MetricsLog;
using nlohmann::json;

std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  std::string line;
  while (std::getline(in, line)) lines.push_back(line);
  return lines;
}

std::vector<int64_t> steps_in(const std::string& path) {
  std::vector<int64_t> steps;
  for (const auto& line : read_lines(path)) {
    const auto record = json::parse(line);
    steps.push_back(record.contains("step") ? record["step"].get<int64_t>() : -1);
  }
  return steps;
}

void write_steps(MetricsLog& log, int64_t first, int64_t last) {
  for (int64_t step = first; step <= last; ++step) {
    log.write({{"step", step}, {"loss", 1.0 / static_cast<double>(step + 1)}});
  }
}

TEST(MetricsLog, OneObjectPerLineFlushedEachWrite) {
  const auto path = data2vec::testing::make_temp_dir("metrics") + "/run/metrics.jsonl";
  MetricsLog log(path, std::nullopt);
  log.write({{"step", 0}, {"loss", 2.5}, {"lr", 1e-4}, {"split", "train"}});
  // Read while the log is still open: the line must already be on disk.
  auto lines = read_lines(path);
  ASSERT_EQ(lines.size(), 1u);
  const auto first = json::parse(lines[0]);
  EXPECT_EQ(first["step"], 0);
  EXPECT_DOUBLE_EQ(first["loss"].get<double>(), 2.5);
  EXPECT_DOUBLE_EQ(first["lr"].get<double>(), 1e-4);
  EXPECT_EQ(first["split"], "train");

  log.write({{"step", 1}, {"loss", std::numeric_limits<double>::quiet_NaN()}});
  lines = read_lines(path);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_TRUE(json::parse(lines[1])["loss"].is_null()) << lines[1];
}

TEST(MetricsLog, RejectsNonObjects) {
  const auto path = data2vec::testing::make_temp_dir("metrics") + "/metrics.jsonl";
  MetricsLog log(path, std::nullopt);
  EXPECT_THROW(log.write(json::array({1, 2})), std::invalid_argument);
  EXPECT_THROW(log.write(3.0), std::invalid_argument);
  EXPECT_TRUE(read_lines(path).empty());
}

TEST(MetricsLog, FreshRunTruncates) {
  const auto path = data2vec::testing::make_temp_dir("metrics") + "/metrics.jsonl";
  {
    MetricsLog log(path, std::nullopt);
    write_steps(log, 0, 9);
  }
  MetricsLog log(path, std::nullopt);
  EXPECT_TRUE(read_lines(path).empty());
  write_steps(log, 0, 2);
  EXPECT_EQ(steps_in(path), (std::vector<int64_t>{0, 1, 2}));
}

TEST(MetricsLog, ResumeKeepsStepsUpToCheckpointAndContinues) {
  const auto path = data2vec::testing::make_temp_dir("metrics") + "/metrics.jsonl";
  {
    MetricsLog log(path, std::nullopt);
    write_steps(log, 0, 4);
    log.write({{"event", "config"}});  // no step: kept
    write_steps(log, 5, 9);
  }
  // A crash mid-write leaves a torn last line.
  {
    std::ofstream torn(path, std::ios::app);
    torn << "{\"step\": 10, \"lo";
  }
  {
    MetricsLog log(path, /*resume_step=*/6);
    EXPECT_EQ(steps_in(path), (std::vector<int64_t>{0, 1, 2, 3, 4, -1, 5, 6}));
    write_steps(log, 7, 8);
  }
  EXPECT_EQ(steps_in(path), (std::vector<int64_t>{0, 1, 2, 3, 4, -1, 5, 6, 7, 8}));
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  // Kept records are byte-identical to what was written.
  EXPECT_EQ(json::parse(read_lines(path)[3])["loss"].get<double>(), 1.0 / 4.0);
}

TEST(MetricsLog, ResumeWithoutExistingFileStartsEmpty) {
  const auto path = data2vec::testing::make_temp_dir("metrics") + "/sub/metrics.jsonl";
  MetricsLog log(path, /*resume_step=*/100);
  EXPECT_TRUE(std::filesystem::exists(path));
  write_steps(log, 101, 101);
  EXPECT_EQ(steps_in(path), (std::vector<int64_t>{101}));
}

TEST(MetricsLog, UnwritablePathNamesTheFile) {
  const auto dir = data2vec::testing::make_temp_dir("metrics");
  try {
    MetricsLog log(dir, std::nullopt);  // a directory, not a file
    FAIL() << "expected an exception";
  } catch (const std::runtime_error& error) {
    EXPECT_NE(std::string(error.what()).find(dir), std::string::npos) << error.what();
  }
}

}  // namespace
