// The pretraining loop every modality runs through. It reads in order, as nanoGPT's does:
//   lr -> micro-steps (forward, backward) -> clip -> optimizer step -> EMA -> checks -> log
//   -> checkpoint
// and resumes exactly from RUN/checkpoints/last.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "data2vec/core/data2vec.h"
#include "data2vec/core/dataset.h"
#include "data2vec/io/config.h"
#include "data2vec/train/distributed.h"

namespace data2vec::train {

// Extra metrics computed now and then (e.g. the k-NN monitor); merged into the log record.
using Monitor = std::function<nlohmann::json(Data2VecImpl& model, int64_t step)>;

struct PretrainJob {
  io::Config config;
  std::string run_dir;                        // RUN: metrics, tb/, checkpoints/, config.yaml
  bool resume = false;                        // continue from RUN/checkpoints/last
  bool overwrite = false;  // a new run where one exists: delete its outputs first (else refused)
  Data2Vec model{nullptr};                    // built from config, on the CPU
  std::shared_ptr<const Dataset> train_data;  // pretraining examples
  Monitor monitor;                            // optional; run every eval.knn_every steps
  int64_t stop_at_step = 0;  // > 0: stop after this step with a checkpoint, keeping the
                             // schedules of train.max_steps (continue later with resume)
  // Data parallel over several processes (null: this process alone). Every rank runs the same
  // job; train.batch_size is per process; rank 0 alone logs and checkpoints.
  std::shared_ptr<ProcessGroup> group;
};

struct PretrainResult {
  int64_t steps_done = 0;  // optimizer steps completed in total (resumed runs included)
  int64_t steps_run = 0;   // of which this call ran (0: a resumed run already complete)
  double last_loss = 0.0;
  int64_t bad_samples = 0;      // examples skipped because they could not be read
  std::string last_checkpoint;  // directory of the newest checkpoint
  std::string stopped_because;  // empty when max_steps was reached
  bool interrupted = false;     // stopped by SIGINT / SIGTERM (with a checkpoint), not by a guard
};

// Runs (or resumes) pretraining. Throws on configuration errors, and when RUN already holds a
// run that is neither resumed nor overwritten; a non-finite loss or a collapse stops the run with
// `stopped_because` set, keeping the checkpoints written before. SIGINT / SIGTERM stop it after
// the current step with a checkpoint (`interrupted`); the caller's handlers are restored on
// return or throw. A program should call route_stop_signals_to_a_thread() (stop_signals.h)
// before it starts any thread, so that no signal interrupts a oneDNN kernel.
PretrainResult pretrain(PretrainJob& job);

}  // namespace data2vec::train
