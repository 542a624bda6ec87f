// Progress: the pure formatting (durations, ETA, rate smoothing, the line) and the plain
// (non-terminal) mode's line count. No assertion depends on how fast the test runs.
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include "data2vec/train/progress.h"
#include "support.h"

namespace {

using namespace data2vec::train;

TEST(Progress, FormatDuration) {
  EXPECT_EQ(format_duration(0), "0:00:00");
  EXPECT_EQ(format_duration(5), "0:00:05");
  EXPECT_EQ(format_duration(59.4), "0:00:59");
  EXPECT_EQ(format_duration(59.6), "0:01:00");
  EXPECT_EQ(format_duration(3723), "1:02:03");
  EXPECT_EQ(format_duration(36000), "10:00:00");
  EXPECT_EQ(format_duration(360000 + 61), "100:01:01");
  EXPECT_EQ(format_duration(-1), "-:--:--");
  EXPECT_EQ(format_duration(std::numeric_limits<double>::quiet_NaN()), "-:--:--");
  EXPECT_EQ(format_duration(std::numeric_limits<double>::infinity()), "-:--:--");
}

TEST(Progress, EtaSeconds) {
  EXPECT_DOUBLE_EQ(eta_seconds(250, 1000, 5.0).value(), 150.0);
  EXPECT_DOUBLE_EQ(eta_seconds(0, 10, 0.5).value(), 20.0);
  EXPECT_DOUBLE_EQ(eta_seconds(1000, 1000, 5.0).value(), 0.0);
  EXPECT_DOUBLE_EQ(eta_seconds(1200, 1000, 5.0).value(), 0.0);
  EXPECT_FALSE(eta_seconds(10, 1000, 0.0).has_value());
  EXPECT_FALSE(eta_seconds(10, 1000, -2.0).has_value());
  EXPECT_FALSE(eta_seconds(10, 1000, std::numeric_limits<double>::infinity()).has_value());
  EXPECT_FALSE(eta_seconds(10, 1000, std::numeric_limits<double>::quiet_NaN()).has_value());
}

TEST(Progress, SmoothedRate) {
  EXPECT_DOUBLE_EQ(smoothed_rate(std::nullopt, 7.0, 1.0, 10.0), 7.0);
  // One time constant moves the estimate 1 - 1/e of the way.
  EXPECT_NEAR(smoothed_rate(10.0, 20.0, 10.0, 10.0), 10.0 + 10.0 * (1.0 - std::exp(-1.0)), 1e-12);
  // Two half-length intervals equal one full-length interval at the same instant rate.
  const double halves = smoothed_rate(smoothed_rate(4.0, 8.0, 2.5, 10.0), 8.0, 2.5, 10.0);
  EXPECT_NEAR(halves, smoothed_rate(4.0, 8.0, 5.0, 10.0), 1e-12);
  // A steady rate stays put.
  EXPECT_DOUBLE_EQ(smoothed_rate(3.0, 3.0, 1.0, 10.0), 3.0);
}

TEST(Progress, FormatLine) {
  ProgressSnapshot s;
  s.label = "train";
  s.step = 450;
  s.total_steps = 1000;
  s.steps_per_second = 12.5;
  s.elapsed_seconds = 36;
  s.status = "loss 0.412";
  EXPECT_EQ(format_progress(s, 10),
            "train  45% [####      ] 450/1000 | 12.5 it/s | 0:00:36<0:00:44 | loss 0.412");
  EXPECT_EQ(format_progress(s, 0),
            "train  45% 450/1000 | 12.5 it/s | 0:00:36<0:00:44 | loss 0.412");

  s.steps_per_second = 0.25;  // slow runs read as seconds per step
  s.status.clear();
  EXPECT_EQ(format_progress(s, 0), "train  45% 450/1000 | 4.00 s/it | 0:00:36<0:36:40");

  s.steps_per_second.reset();
  s.step = 1000;
  s.label.clear();
  EXPECT_EQ(format_progress(s, 4), "100% [####] 1000/1000 | ? it/s | 0:00:36<-:--:--");
}

std::vector<std::string> lines_of(std::FILE* file) {
  std::rewind(file);
  std::vector<std::string> lines;
  std::string line;
  for (int c; (c = std::fgetc(file)) != EOF;) {
    if (c == '\n') {
      lines.push_back(line);
      line.clear();
    } else {
      line.push_back(static_cast<char>(c));
    }
  }
  EXPECT_TRUE(line.empty()) << "unterminated line: " << line;
  return lines;
}

TEST(Progress, PlainModeLinesEveryIntervalAndAtFinish) {
  std::FILE* file = std::tmpfile();
  ASSERT_NE(file, nullptr);
  {
    Progress progress(10, 0, "train", ProgressOptions().stream(file).plain_interval_seconds(0));
    for (int step = 1; step <= 10; ++step) progress.update(step, "loss " + std::to_string(step));
    progress.finish();
    progress.finish();  // idempotent
  }
  const auto lines = lines_of(file);
  // Each update; finish adds no copy of the final line the last update already wrote.
  ASSERT_EQ(lines.size(), 10u);
  EXPECT_EQ(lines[0].rfind("train  10% 1/10 | ", 0), 0u) << lines[0];
  EXPECT_NE(lines[0].find("| loss 1"), std::string::npos) << lines[0];
  EXPECT_EQ(lines[9].rfind("train 100% 10/10 | ", 0), 0u) << lines[9];
  EXPECT_EQ(lines[9].find('\r'), std::string::npos);
  std::fclose(file);
}

TEST(Progress, PlainModeLongIntervalShowsFirstAndFinal) {
  std::FILE* file = std::tmpfile();
  ASSERT_NE(file, nullptr);
  {
    // A resumed run: 40 of 50 steps were done before.
    Progress progress(50, 40, "", ProgressOptions().stream(file).plain_interval_seconds(1e9));
    for (int step = 41; step <= 50; ++step) progress.update(step, "");
    progress.finish();
  }
  const auto lines = lines_of(file);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0].rfind(" 82% 41/50 | ", 0), 0u) << lines[0];
  EXPECT_EQ(lines[1].rfind("100% 50/50 | ", 0), 0u) << lines[1];
  std::fclose(file);
}

}  // namespace
