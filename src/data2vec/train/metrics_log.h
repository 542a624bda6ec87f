// metrics.jsonl: one JSON object per line, the run's machine-readable history (plot.h draws it).
#pragma once

#include <cstdint>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace data2vec::train {

// Appends records to a JSON-lines file, flushing each line so a crash loses at most the record
// being written.
class MetricsLog {
 public:
  // Without `resume_step` the file is started empty. With it, the existing file (if any) is first
  // rewritten atomically keeping only records whose "step" is <= resume_step, so a run resumed
  // from that checkpoint continues the history without duplicates. Records with no numeric
  // "step" are kept; lines that do not parse (a torn last write) are dropped. Creates the parent
  // directory.
  MetricsLog(const std::string& path, std::optional<int64_t> resume_step);

  // One line; `record` must be a JSON object and should carry "step". NaN/inf become null.
  void write(const nlohmann::json& record);

  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::ofstream out_;
};

}  // namespace data2vec::train
