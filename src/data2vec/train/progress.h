// Training progress on stderr: a bar redrawn in place on a terminal, a plain line every
// `plain_interval_seconds` otherwise (log files, CI). The formatting is pure and tested apart.
#pragma once

#include <torch/arg.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>

namespace data2vec::train {

// "h:mm:ss" with hours unbounded ("0:00:05", "1:02:03", "100:00:00"); rounds to the nearest
// second. Negative, NaN or infinite input gives "-:--:--" (unknown).
std::string format_duration(double seconds);

// Seconds left at `steps_per_second` until `step` reaches `total_steps` (0 once reached);
// nothing when the rate is not a positive finite number.
std::optional<double> eta_seconds(int64_t step, int64_t total_steps, double steps_per_second);

// Exponential smoothing over wall time: `instant` (measured over `dt_seconds`) moves the estimate
// by 1 - exp(-dt / time_constant), so irregular update intervals weigh in by their length. The
// first measurement (`previous` empty) is taken as is.
double smoothed_rate(std::optional<double> previous, double instant, double dt_seconds,
                     double time_constant_seconds);

// What one progress line shows.
struct ProgressSnapshot {
  std::string label;
  int64_t step = 0;
  int64_t total_steps = 0;
  std::optional<double> steps_per_second;  // empty before the first measurement
  double elapsed_seconds = 0;
  std::string status;
};

// "label  45% [#####     ] 450/1000 | 12.3 it/s | 0:00:36<0:00:44 | status"; no bracketed bar
// when `bar_width` is 0.
std::string format_progress(const ProgressSnapshot& snapshot, int bar_width);

struct ProgressOptions {
  // An alias, so TORCH_ARG's `const T&` is a const pointer, not a pointer to const FILE.
  using FilePtr = std::FILE*;

  /// Seconds between plain lines when the stream is not a terminal. Default 30.
  TORCH_ARG(double, plain_interval_seconds) = 30.0;
  /// Minimum seconds between redraws of the terminal bar. Default 0.1.
  TORCH_ARG(double, redraw_interval_seconds) = 0.1;
  /// Time constant of the rate smoothing. Default 10.
  TORCH_ARG(double, rate_time_constant_seconds) = 10.0;
  /// Where to draw; the bar mode is chosen by isatty() on it. Default stderr.
  TORCH_ARG(FilePtr, stream) = stderr;
};

// Not thread-safe: call from the training loop only. Anything else printed to the same terminal
// while the bar is shown lands after the bar's text on that line.
class Progress {
 public:
  // Counts from `start_step` (a resumed run) to `total_steps`; the rate covers this run only.
  Progress(int64_t total_steps, int64_t start_step, std::string label,
           ProgressOptions options = {});
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  // `step` is the number of steps done; `status` is free text such as "loss 0.412 lr 3.2e-04".
  void update(int64_t step, const std::string& status);

  // Draws the final state and ends the line. Idempotent.
  void finish();

 private:
  using Clock = std::chrono::steady_clock;

  ProgressSnapshot snapshot(Clock::time_point now) const;
  void draw(Clock::time_point now);

  int64_t total_steps_;
  int64_t start_step_;
  std::string label_;
  ProgressOptions options_;
  bool terminal_;
  bool finished_ = false;

  int64_t step_;
  std::string status_;
  Clock::time_point start_time_;
  Clock::time_point last_drawn_;
  int64_t drawn_step_ = -1;  // the step and status the newest line shows
  std::string drawn_status_;
  // The rate is measured between samples at least one second apart.
  Clock::time_point rate_sample_time_;
  int64_t rate_sample_step_;
  std::optional<double> rate_;
};

}  // namespace data2vec::train
