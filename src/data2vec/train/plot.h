// metrics.png: the run's curves at a glance, drawn by gnuplot from metrics.jsonl.
#pragma once

#include <string>

namespace data2vec::train {

// Reads <run_dir>/metrics.jsonl (see metrics_log.h) and writes <run_dir>/metrics.png: one panel
// each for loss, target_std with pred_std, lr, and every key ending in "_acc" (knn_acc,
// probe_acc, ...) when present, all against "step". Records without a numeric "step" and
// null values are skipped. The PNG is replaced atomically.
// Throws std::runtime_error when metrics.jsonl is missing or has nothing to plot, when gnuplot is
// not on PATH (install gnuplot-nox), or when gnuplot fails (the message holds its output and
// the script's path, kept for inspection).
void plot_metrics(const std::string& run_dir);

}  // namespace data2vec::train
