#include "data2vec/train/schedule.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace data2vec::train {

namespace {

constexpr double kPi = 3.14159265358979323846;

double warmup_then(int64_t step, const ScheduleOptions& o,
                   double (*decay)(double progress, double final_scale)) {
  if (step < o.warmup_steps) return o.peak_lr * double(step + 1) / double(o.warmup_steps);
  const double span = std::max<int64_t>(1, o.total_steps - o.warmup_steps);
  const double progress = std::clamp(double(step - o.warmup_steps) / span, 0.0, 1.0);
  return o.peak_lr * decay(progress, o.final_lr_scale);
}

double cosine(double progress, double final_scale) {
  return final_scale + (1.0 - final_scale) * 0.5 * (1.0 + std::cos(kPi * progress));
}

double linear(double progress, double final_scale) {
  return 1.0 - (1.0 - final_scale) * progress;
}

double constant(double, double) {
  return 1.0;
}

double tri_stage(int64_t step, const ScheduleOptions& o) {
  const double total = double(o.total_steps);
  const double warmup = o.tri_stage_warmup * total, hold = o.tri_stage_hold * total,
               decay = o.tri_stage_decay * total;
  const double init_scale = 0.01;
  const double s = double(step);
  if (s < warmup) return o.peak_lr * (init_scale + (1.0 - init_scale) * s / std::max(1.0, warmup));
  if (s < warmup + hold) return o.peak_lr;
  const double final_scale = std::max(o.final_lr_scale, 1e-12);
  const double progress = std::min(1.0, (s - warmup - hold) / std::max(1.0, decay));
  return o.peak_lr * std::exp(std::log(final_scale) * progress);
}

}  // namespace

double lr_at(int64_t step, const ScheduleOptions& o) {
  if (o.kind == "cosine") return warmup_then(step, o, cosine);
  if (o.kind == "linear") return warmup_then(step, o, linear);
  if (o.kind == "constant") return warmup_then(step, o, constant);
  if (o.kind == "tri_stage") return tri_stage(step, o);
  throw std::invalid_argument("unknown lr schedule '" + o.kind +
                              "' (expected cosine, linear, tri_stage or constant)");
}

}  // namespace data2vec::train
