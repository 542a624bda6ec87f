// The papers' evaluation protocol (arXiv 2202.03555 sec. 4) for a pretraining run, with both
// baselines measured in the same run: a linear model on the raw input, and the same encoder at
// random init.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "data2vec/io/config.h"
#include "data2vec/train/trainer.h"

namespace data2vec::app {

struct EvaluateOptions {
  std::string checkpoint;   // a run directory or a checkpoint directory
  std::string config_path;  // optional: evaluate with this config instead of the run's
  std::vector<std::string> overrides;
  bool probe = true;            // linear probes (raw input, random init, student, teacher)
  double label_fraction = 0.0;  // > 0: also fine-tune on this fraction of the labels
  int64_t finetune_epochs = 30;
  double finetune_lr = 1e-3;
  int64_t finetune_head_only_epochs = 0;  // of finetune_epochs: the head alone first (LP-FT)
  // Unset: the modality's recipe, 0.1 for images (BEiT / data2vec fine-tuning), 0 for speech
  // and text (wav2vec 2.0 and RoBERTa fine-tune without it).
  std::optional<double> finetune_label_smoothing;
  int64_t finetune_shift = 0;   // random translation in pixels once the encoder trains (images)
  double finetune_mixup = 0.0;  // mixup alpha once the encoder trains; 0 = off (images only)
  // Per-layer lr factor, the head 1 and each block below it one more factor down (BEiT). Unset:
  // the modality's recipe, 0.65 for images (BEiT / data2vec), 1 for speech and text (wav2vec 2.0
  // and RoBERTa fine-tune without it).
  std::optional<double> finetune_layer_decay;
  double finetune_weight_decay = 0.05;  // AdamW's decoupled decay (eval::FinetuneOptions)
  bool finetune_every_task = false;     // fine-tune on every task with its own train split (text:
                                        // brown genre and spam), not only the first
  int64_t probe_train_limit = 0;        // examples of the train split used by probes; 0 = all
  int64_t test_limit = 0;               // examples of the test split scored; 0 = all
  std::string report_path;              // markdown report; empty = none
};

struct EvaluationRow {
  std::string task;     // e.g. "fashion-mnist", "brown genre"
  std::string method;   // e.g. "data2vec probe"
  double test_acc = 0;  // top-1, fraction
  double train_acc = 0;
  std::string detail;  // chosen L2, epochs, ...
};

// Runs the requested evaluations and returns one row per measurement. Prints progress.
std::vector<EvaluationRow> evaluate_run(const EvaluateOptions& options);

// Markdown table of rows.
std::string rows_to_markdown(const std::vector<EvaluationRow>& rows);

// The k-NN monitor for pretraining (eval.knn_every): student and teacher k-NN accuracy on
// eval.knn_train_size / eval.knn_test_size examples of the labelled splits.
train::Monitor make_knn_monitor(const io::Config& config);

}  // namespace data2vec::app
