#include "data2vec/train/plot.h"

#include <stdlib.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>
#include <utility>
#include <vector>

namespace data2vec::train {

namespace {

namespace fs = std::filesystem;

using Series = std::vector<std::pair<double, double>>;  // (step, value), in file order

struct Panel {
  std::string title;
  std::string ylabel;
  std::vector<std::string> keys;  // series drawn in this panel
};

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() &&
         text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool plotted_key(const std::string& key) {
  return key == "loss" || key == "target_std" || key == "pred_std" || key == "lr" ||
         ends_with(key, "_acc");
}

// Every plotted key's (step, value) points; unparseable lines (a torn last write) are skipped.
std::map<std::string, Series> read_series(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("plot_metrics: cannot read '" + path + "'");
  std::map<std::string, Series> series;
  std::string line;
  while (std::getline(in, line)) {
    const auto record = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (record.is_discarded() || !record.is_object()) continue;
    const auto step = record.find("step");
    if (step == record.end() || !step->is_number()) continue;
    for (const auto& [key, value] : record.items()) {
      if (value.is_number() && plotted_key(key)) {
        series[key].emplace_back(step->get<double>(), value.get<double>());
      }
    }
  }
  return series;
}

std::vector<Panel> choose_panels(const std::map<std::string, Series>& series) {
  std::vector<Panel> candidates = {
      {"training loss", "loss", {"loss"}},
      {"target and prediction std (collapse watch)",
       "std over masked positions",
       {"target_std", "pred_std"}},
      {"learning rate", "lr", {"lr"}},
  };
  Panel accuracy{"accuracy", "accuracy", {}};
  for (const auto& [key, points] : series) {
    if (ends_with(key, "_acc")) accuracy.keys.push_back(key);
  }
  candidates.push_back(accuracy);
  std::vector<Panel> panels;
  for (auto& panel : candidates) {
    std::vector<std::string> present;
    for (const auto& key : panel.keys) {
      if (series.count(key) != 0) present.push_back(key);
    }
    if (present.empty()) continue;
    panel.keys = present;
    panels.push_back(panel);
  }
  return panels;
}

// A gnuplot single-quoted string: no escapes are interpreted, a quote is doubled.
std::string gp_quote(const std::string& text) {
  std::string quoted = "'";
  for (char c : text) quoted += c == '\'' ? std::string("''") : std::string(1, c);
  return quoted + "'";
}

std::string shell_quote(const std::string& text) {
  std::string quoted = "'";
  for (char c : text) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

bool gnuplot_on_path() {
  return std::system("command -v gnuplot >/dev/null 2>&1") == 0;
}

// Runs `command`, returning its exit status (-1 if it did not exit normally) and its output.
std::pair<int, std::string> run_command(const std::string& command) {
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) throw std::runtime_error("plot_metrics: cannot run: " + command);
  std::string output;
  char chunk[512];
  while (size_t n = std::fread(chunk, 1, sizeof chunk, pipe)) output.append(chunk, n);
  const int status = ::pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
}

// The data file holds one gnuplot "index" block per key, in `order`.
void write_data(const std::string& path, const std::map<std::string, Series>& series,
                const std::vector<std::string>& order) {
  std::ofstream out(path);
  out.precision(10);
  for (const auto& key : order) {
    out << "# " << key << "\n";
    for (const auto& [step, value] : series.at(key)) out << step << " " << value << "\n";
    out << "\n\n";
  }
  if (!out) throw std::runtime_error("plot_metrics: cannot write '" + path + "'");
}

std::string write_script(const std::vector<Panel>& panels,
                         const std::map<std::string, Series>& series, const std::string& data_path,
                         const std::string& png_path, const std::string& title) {
  double min_step = 0;
  double max_step = 0;
  bool first = true;
  for (const auto& panel : panels) {
    for (const auto& key : panel.keys) {
      for (const auto& point : series.at(key)) {
        min_step = first ? point.first : std::min(min_step, point.first);
        max_step = first ? point.first : std::max(max_step, point.first);
        first = false;
      }
    }
  }
  const int columns = panels.size() > 1 ? 2 : 1;
  const int rows = static_cast<int>((panels.size() + columns - 1) / columns);

  std::ostringstream gp;
  gp.precision(10);
  // noenhanced: keys like target_std must not turn into subscripts.
  gp << "if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {\n"
     << "  set terminal pngcairo size " << 640 * columns << "," << 420 * rows + 40
     << " noenhanced font 'sans,10'\n"
     << "} else {\n"
     << "  set terminal png size " << 640 * columns << "," << 420 * rows + 40 << " noenhanced\n"
     << "}\n"
     << "set output " << gp_quote(png_path) << "\n"
     << "set multiplot layout " << rows << "," << columns << " title " << gp_quote(title)
     << " font ',12'\n"
     << "set grid\n"
     << "set key opaque box\n"
     << "set xlabel 'step'\n";
  if (max_step > min_step) gp << "set xrange [" << min_step << ":" << max_step << "]\n";

  int index = 0;
  for (const auto& panel : panels) {
    bool all_positive = true;
    size_t most_points = 0;
    for (const auto& key : panel.keys) {
      most_points = std::max(most_points, series.at(key).size());
      for (const auto& point : series.at(key)) all_positive = all_positive && point.second > 0;
    }
    // Accuracies rise and losses fall: keep the legend in the corner the curves leave free.
    gp << "set key " << (ends_with(panel.keys.front(), "_acc") ? "bottom" : "top") << " right\n";
    gp << "set title " << gp_quote(panel.title) << "\n"
       << "set ylabel " << gp_quote(panel.ylabel) << "\n";
    // Loss falls by orders of magnitude; a log axis keeps the late curve readable.
    if (panel.keys.front() == "loss" && all_positive) {
      gp << "set logscale y\n";
    } else {
      gp << "unset logscale y\n";
    }
    gp << "set format y " << (panel.keys.front() == "lr" ? "'%.1e'" : "'%g'") << "\n";
    // Sparse series (evaluations) need markers; a single point draws no line at all.
    const std::string style = most_points <= 60 ? "linespoints pt 7 ps 0.7" : "lines";
    gp << "plot ";
    for (size_t i = 0; i < panel.keys.size(); ++i, ++index) {
      if (i > 0) gp << ", ";
      gp << gp_quote(data_path) << " index " << index << " using 1:2 with " << style
         << " lw 1.5 title " << gp_quote(panel.keys[i]);
    }
    gp << "\n";
  }
  gp << "unset multiplot\nset output\n";
  return gp.str();
}

}  // namespace

void plot_metrics(const std::string& run_dir) {
  const std::string metrics_path = (fs::path(run_dir) / "metrics.jsonl").string();
  const std::string png_path = (fs::path(run_dir) / "metrics.png").string();
  if (!fs::exists(metrics_path)) {
    throw std::runtime_error("plot_metrics: '" + metrics_path + "' not found: is '" + run_dir +
                             "' a training run directory?");
  }
  const auto series = read_series(metrics_path);
  const auto panels = choose_panels(series);
  if (panels.empty()) {
    throw std::runtime_error("plot_metrics: '" + metrics_path +
                             "' holds no records with a numeric \"step\" and any of loss, "
                             "target_std, pred_std, lr or *_acc: nothing to plot");
  }
  if (!gnuplot_on_path()) {
    throw std::runtime_error(
        "plot_metrics: gnuplot not found on PATH: install gnuplot-nox (apt-get install "
        "gnuplot-nox) to draw '" +
        png_path + "'");
  }

  std::string temp_template = (fs::temp_directory_path() / "data2vec-plot-XXXXXX").string();
  if (::mkdtemp(temp_template.data()) == nullptr) {
    throw std::runtime_error("plot_metrics: cannot create a temp dir under " +
                             fs::temp_directory_path().string());
  }
  const fs::path temp_dir = temp_template;
  const std::string data_path = (temp_dir / "metrics.dat").string();
  const std::string script_path = (temp_dir / "metrics.gp").string();
  const std::string png_tmp = png_path + ".tmp";

  std::vector<std::string> order;
  for (const auto& panel : panels) order.insert(order.end(), panel.keys.begin(), panel.keys.end());
  write_data(data_path, series, order);
  const std::string title =
      "data2vec run: " + fs::path(run_dir).lexically_normal().filename().string();
  {
    std::ofstream script(script_path);
    script << write_script(panels, series, data_path, png_tmp, title);
    if (!script) throw std::runtime_error("plot_metrics: cannot write '" + script_path + "'");
  }

  const auto [status, output] = run_command("gnuplot " + shell_quote(script_path) + " 2>&1");
  if (status != 0 || !fs::exists(png_tmp) || fs::file_size(png_tmp) == 0) {
    std::error_code ignored;
    fs::remove(png_tmp, ignored);
    throw std::runtime_error("plot_metrics: gnuplot failed (exit status " + std::to_string(status) +
                             ") on " + script_path + " (kept for inspection):\n" + output);
  }
  fs::rename(png_tmp, png_path);
  std::error_code ignored;
  fs::remove_all(temp_dir, ignored);
}

}  // namespace data2vec::train
