#include <cmath>

#include "data2vec/train/schedule.h"
#include "support.h"

using data2vec::train::lr_at;
using data2vec::train::ScheduleOptions;

TEST(Schedule, CosineWarmupPeakAndEnd) {
  ScheduleOptions o;
  o.kind = "cosine";
  o.peak_lr = 1.0;
  o.total_steps = 110;
  o.warmup_steps = 10;
  o.final_lr_scale = 0.1;
  EXPECT_DOUBLE_EQ(lr_at(0, o), 0.1);   // (0+1)/10
  EXPECT_DOUBLE_EQ(lr_at(9, o), 1.0);   // end of warm-up
  EXPECT_DOUBLE_EQ(lr_at(10, o), 1.0);  // cosine at progress 0
  EXPECT_NEAR(lr_at(60, o), 0.1 + 0.9 * 0.5, 1e-12);  // half way
  EXPECT_NEAR(lr_at(110, o), 0.1, 1e-12);
  EXPECT_NEAR(lr_at(500, o), 0.1, 1e-12);  // clamped after the end
}

TEST(Schedule, LinearDecay) {
  ScheduleOptions o;
  o.kind = "linear";
  o.peak_lr = 2.0;
  o.total_steps = 100;
  o.warmup_steps = 0;
  EXPECT_DOUBLE_EQ(lr_at(0, o), 2.0);
  EXPECT_DOUBLE_EQ(lr_at(50, o), 1.0);
  EXPECT_DOUBLE_EQ(lr_at(100, o), 0.0);
}

TEST(Schedule, TriStageWarmupHoldDecay) {
  ScheduleOptions o;
  o.kind = "tri_stage";
  o.peak_lr = 1.0;
  o.total_steps = 1000;
  o.tri_stage_warmup = 0.1;
  o.tri_stage_hold = 0.4;
  o.tri_stage_decay = 0.5;
  o.final_lr_scale = 0.01;
  EXPECT_NEAR(lr_at(0, o), 0.01, 1e-12);
  EXPECT_NEAR(lr_at(50, o), 0.01 + 0.99 * 0.5, 1e-12);
  EXPECT_DOUBLE_EQ(lr_at(100, o), 1.0);
  EXPECT_DOUBLE_EQ(lr_at(499, o), 1.0);
  EXPECT_NEAR(lr_at(750, o), std::exp(std::log(0.01) * 0.5), 1e-12);
  EXPECT_NEAR(lr_at(1000, o), 0.01, 1e-12);
}

TEST(Schedule, UnknownKindIsAnError) {
  ScheduleOptions o;
  o.kind = "step";
  EXPECT_THROW(lr_at(0, o), std::invalid_argument);
}
