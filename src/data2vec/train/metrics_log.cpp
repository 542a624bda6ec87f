#include "data2vec/train/metrics_log.h"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <sstream>
#include <stdexcept>

#include "data2vec/io/files.h"

namespace data2vec::train {

namespace {

// The lines of `text` a run resumed at `resume_step` keeps, each ending in '\n'.
std::string kept_lines(const std::string& text, int64_t resume_step) {
  std::istringstream lines(text);
  std::string line;
  std::string kept;
  while (std::getline(lines, line)) {
    const auto record = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (record.is_discarded() || !record.is_object()) continue;
    const auto step = record.find("step");
    if (step != record.end() && step->is_number() && step->get<double>() > resume_step) continue;
    kept += line;
    kept += '\n';
  }
  return kept;
}

}  // namespace

MetricsLog::MetricsLog(const std::string& path, std::optional<int64_t> resume_step) : path_(path) {
  namespace fs = std::filesystem;
  const auto parent = fs::path(path).parent_path();
  std::error_code error;
  if (!parent.empty()) fs::create_directories(parent, error);
  if (error) {
    throw std::runtime_error("MetricsLog: cannot create directory '" + parent.string() +
                             "': " + error.message());
  }
  auto mode = std::ios::out | std::ios::trunc;
  if (resume_step && fs::exists(path)) {
    io::write_file_atomically(path, kept_lines(io::read_file(path), *resume_step));
    mode = std::ios::out | std::ios::app;
  }
  out_.open(path, mode);
  if (!out_) {
    throw std::runtime_error("MetricsLog: cannot open '" + path +
                             "' for writing: " + std::strerror(errno));
  }
}

void MetricsLog::write(const nlohmann::json& record) {
  if (!record.is_object()) {
    throw std::invalid_argument("MetricsLog: a record must be a JSON object, got " + record.dump() +
                                " (writing '" + path_ + "')");
  }
  out_ << record.dump() << '\n';
  out_.flush();
  if (!out_) {
    throw std::runtime_error("MetricsLog: writing '" + path_ +
                             "' failed (disk full or file removed?)");
  }
}

}  // namespace data2vec::train
