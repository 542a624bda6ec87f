// Learning-rate schedules as pure functions of the step (the trainer calls lr_at in plain sight).
#pragma once

#include <cstdint>
#include <string>

namespace data2vec::train {

struct ScheduleOptions {
  std::string kind = "cosine";  // cosine | linear | tri_stage | constant
  double peak_lr = 1e-3;
  int64_t total_steps = 1000;
  int64_t warmup_steps = 100;   // cosine, linear, constant: linear warm-up from 0
  double final_lr_scale = 0.0;  // lr at the end, as a fraction of the peak
  // tri_stage (wav2vec 2.0): fractions of total_steps for warm-up, hold and decay; the warm-up
  // starts at 0.01 x peak, the decay is exponential down to final_lr_scale x peak.
  double tri_stage_warmup = 0.03, tri_stage_hold = 0.9, tri_stage_decay = 0.07;
};

// Learning rate for optimizer step `step` (0-based).
double lr_at(int64_t step, const ScheduleOptions& options);

}  // namespace data2vec::train
