// Helpers for the tests that run the trainer end to end: a small toy run's config, one call per
// (possibly stopped or resumed) run, and the bytes of its last checkpoint's weights.
#pragma once

#include <cstdint>
#include <string>

#include "data2vec/io/config.h"
#include "data2vec/train/trainer.h"

namespace data2vec::testing {

// The toy `micro` encoder on variable-length toy data (padding on every path), data2vec 1.0 with
// instance-norm targets, 2 threads, checkpoints every 5 steps, no TensorBoard.
io::Config toy_run_config(int64_t max_steps);

// Pretrains `config` into `run_dir` (resuming from its last checkpoint when `resume`); stops
// after step `stop_at` when > 0, as a job killed there would. `monitor` runs every
// eval.knn_every steps when given.
train::PretrainResult run_pretraining(const io::Config& config, const std::string& run_dir,
                                      bool resume, int64_t stop_at = 0,
                                      train::Monitor monitor = {});

// A run directory holding an untrained Data2Vec of `config` (what pretrain would write at step
// 0), for the commands that read a checkpoint.
std::string untrained_run(const io::Config& config);

// The bytes of <run_dir>/checkpoints/last/model.safetensors.
std::string last_model_bytes(const std::string& run_dir);

}  // namespace data2vec::testing
