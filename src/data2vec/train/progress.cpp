#include "data2vec/train/progress.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <utility>

namespace data2vec::train {

namespace {

std::string printf_string(const char* format, double value) {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, format, value);
  return buffer;
}

// Slow runs read better as seconds per step than as a small fraction of a step per second.
std::string format_rate(double steps_per_second) {
  if (steps_per_second < 1.0) return printf_string("%.2f s/it", 1.0 / steps_per_second);
  if (steps_per_second < 10.0) return printf_string("%.2f it/s", steps_per_second);
  if (steps_per_second < 100.0) return printf_string("%.1f it/s", steps_per_second);
  return printf_string("%.0f it/s", steps_per_second);
}

// Columns of the terminal behind `stream`, or 0 when unknown.
int terminal_columns(std::FILE* stream) {
  winsize size{};
  if (::ioctl(::fileno(stream), TIOCGWINSZ, &size) != 0) return 0;
  return size.ws_col;
}

double seconds_between(std::chrono::steady_clock::time_point from,
                       std::chrono::steady_clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

}  // namespace

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "-:--:--";
  const auto total = static_cast<int64_t>(std::llround(seconds));
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%lld:%02lld:%02lld", static_cast<long long>(total / 3600),
                static_cast<long long>(total / 60 % 60), static_cast<long long>(total % 60));
  return buffer;
}

std::optional<double> eta_seconds(int64_t step, int64_t total_steps, double steps_per_second) {
  if (!std::isfinite(steps_per_second) || steps_per_second <= 0) return std::nullopt;
  const int64_t left = std::max<int64_t>(0, total_steps - step);
  return static_cast<double>(left) / steps_per_second;
}

double smoothed_rate(std::optional<double> previous, double instant, double dt_seconds,
                     double time_constant_seconds) {
  if (!previous) return instant;
  const double weight = 1.0 - std::exp(-dt_seconds / time_constant_seconds);
  return *previous + weight * (instant - *previous);
}

std::string format_progress(const ProgressSnapshot& s, int bar_width) {
  // Integer arithmetic: 41/50 must show 82%, not a floored 81.999...
  const int64_t done = std::clamp<int64_t>(s.step, 0, std::max<int64_t>(s.total_steps, 0));
  const int64_t total = std::max<int64_t>(s.total_steps, 1);
  std::string line = s.label.empty() ? "" : s.label + " ";
  line += printf_string("%3.0f%%", static_cast<double>(100 * done / total));
  if (bar_width > 0) {
    const auto filled = static_cast<int>(bar_width * done / total);
    line += " [" + std::string(filled, '#') + std::string(bar_width - filled, ' ') + "]";
  }
  line += " " + std::to_string(s.step) + "/" + std::to_string(s.total_steps);
  line += " | " + (s.steps_per_second ? format_rate(*s.steps_per_second) : std::string("? it/s"));
  const auto eta =
      s.steps_per_second ? eta_seconds(s.step, s.total_steps, *s.steps_per_second) : std::nullopt;
  line += " | " + format_duration(s.elapsed_seconds) + "<" + format_duration(eta.value_or(-1));
  if (!s.status.empty()) line += " | " + s.status;
  return line;
}

Progress::Progress(int64_t total_steps, int64_t start_step, std::string label,
                   ProgressOptions options)
    : total_steps_(total_steps),
      start_step_(start_step),
      label_(std::move(label)),
      options_(options),
      terminal_(options.stream() != nullptr && ::isatty(::fileno(options.stream())) == 1),
      step_(start_step),
      start_time_(Clock::now()),
      last_drawn_(Clock::time_point::min()),
      rate_sample_time_(start_time_),
      rate_sample_step_(start_step) {
  if (options.stream() == nullptr) throw std::invalid_argument("Progress: stream is null");
}

Progress::~Progress() {
  // A run that ends by exception still leaves the cursor on a fresh line.
  if (!finished_ && terminal_ && last_drawn_ != Clock::time_point::min()) {
    std::fputc('\n', options_.stream());
  }
}

void Progress::update(int64_t step, const std::string& status) {
  const auto now = Clock::now();
  step_ = step;
  status_ = status;
  const double dt = seconds_between(rate_sample_time_, now);
  if (dt >= 1.0) {
    const double instant = static_cast<double>(step - rate_sample_step_) / dt;
    rate_ = smoothed_rate(rate_, instant, dt, options_.rate_time_constant_seconds());
    rate_sample_time_ = now;
    rate_sample_step_ = step;
  }
  const double interval =
      terminal_ ? options_.redraw_interval_seconds() : options_.plain_interval_seconds();
  // The first update always shows, so a log says early that the run started.
  if (last_drawn_ == Clock::time_point::min() || seconds_between(last_drawn_, now) >= interval) {
    draw(now);
  }
}

void Progress::finish() {
  if (finished_) return;
  // A log already ending with this step's line gets no second copy of it.
  if (terminal_ || drawn_step_ != step_ || drawn_status_ != status_) draw(Clock::now());
  if (terminal_) std::fputc('\n', options_.stream());
  std::fflush(options_.stream());
  finished_ = true;
}

ProgressSnapshot Progress::snapshot(Clock::time_point now) const {
  ProgressSnapshot s;
  s.label = label_;
  s.step = step_;
  s.total_steps = total_steps_;
  s.elapsed_seconds = seconds_between(start_time_, now);
  s.steps_per_second = rate_;
  // Before a full second has passed, the average so far beats showing nothing (after half a
  // second: sooner, a single fast step reads as an absurd rate).
  if (!rate_ && s.elapsed_seconds >= 0.5 && step_ > start_step_) {
    s.steps_per_second = static_cast<double>(step_ - start_step_) / s.elapsed_seconds;
  }
  s.status = status_;
  return s;
}

void Progress::draw(Clock::time_point now) {
  std::FILE* stream = options_.stream();
  drawn_step_ = step_;
  drawn_status_ = status_;
  if (terminal_) {
    std::string line = format_progress(snapshot(now), 20);
    const int columns = terminal_columns(stream);
    // A line wider than the terminal wraps, and \r then only returns to the wrapped part.
    if (columns > 1 && static_cast<int>(line.size()) >= columns) line.resize(columns - 1);
    std::fprintf(stream, "\r%s\x1b[K", line.c_str());
  } else {
    std::fprintf(stream, "%s\n", format_progress(snapshot(now), 0).c_str());
  }
  std::fflush(stream);
  last_drawn_ = now;
}

}  // namespace data2vec::train
