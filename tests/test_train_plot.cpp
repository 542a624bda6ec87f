// metrics.png from metrics.jsonl: a real PNG comes out of gnuplot, and the failure modes
// (no metrics file, nothing to plot) say what is wrong.
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "data2vec/train/plot.h"
#include "support.h"

namespace {

using data2vec::train::plot_metrics;
namespace fs = std::filesystem;

bool gnuplot_available() {
  return std::system("command -v gnuplot >/dev/null 2>&1") == 0;
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// A plausible run: per-step training records, sparse eval records, a torn last line.
void write_synthetic_metrics(const std::string& run_dir) {
  std::ofstream out(run_dir + "/metrics.jsonl");
  for (int step = 0; step <= 400; ++step) {
    const double loss = 2.0 * std::exp(-step / 120.0) + 0.05 + 0.02 * std::sin(step * 0.7);
    const double target_std = 0.9 - 0.3 * step / 400.0;
    const double pred_std = 0.2 + 0.5 * (1.0 - std::exp(-step / 80.0));
    const double lr =
        step < 40 ? 5e-4 * step / 40.0 : 5e-4 * 0.5 * (1 + std::cos(M_PI * (step - 40) / 360.0));
    out << "{\"step\":" << step << ",\"loss\":" << loss << ",\"target_std\":" << target_std
        << ",\"pred_std\":" << pred_std << ",\"lr\":" << lr << ",\"tau\":0.999}\n";
    if (step % 100 == 0) {
      out << "{\"step\":" << step << ",\"knn_acc\":" << 0.3 + 0.001 * step
          << ",\"teacher_knn_acc\":" << 0.25 + 0.0012 * step << "}\n";
    }
  }
  out << "{\"step\":401,\"loss\":0.0";  // torn write
}

TEST(PlotMetrics, WritesPng) {
  if (!gnuplot_available()) GTEST_SKIP() << "gnuplot not on PATH";
  const auto run_dir = data2vec::testing::make_temp_dir("plot-run");
  write_synthetic_metrics(run_dir);
  plot_metrics(run_dir);
  const std::string png = run_dir + "/metrics.png";
  ASSERT_TRUE(fs::exists(png));
  EXPECT_FALSE(fs::exists(png + ".tmp"));
  const std::string bytes = read_bytes(png);
  ASSERT_GE(bytes.size(), 24u);
  EXPECT_EQ(bytes.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  // Four panels of curves, text and grids: well above a blank image, well below a photo.
  EXPECT_GT(bytes.size(), 20u * 1024) << "suspiciously small PNG";
  EXPECT_LT(bytes.size(), 5u * 1024 * 1024);
  // IHDR width and height (big-endian at bytes 16 and 20): the 2x2 layout.
  auto be32 = [&](size_t at) {
    uint32_t v = 0;
    for (size_t i = 0; i < 4; ++i) v = (v << 8) | static_cast<unsigned char>(bytes[at + i]);
    return v;
  };
  EXPECT_EQ(be32(16), 1280u);
  EXPECT_EQ(be32(20), 880u);

  // Plotting again replaces the image.
  plot_metrics(run_dir);
  EXPECT_TRUE(fs::exists(png));
}

TEST(PlotMetrics, OnlyLossStillPlots) {
  if (!gnuplot_available()) GTEST_SKIP() << "gnuplot not on PATH";
  const auto run_dir = data2vec::testing::make_temp_dir("plot-loss");
  {
    std::ofstream out(run_dir + "/metrics.jsonl");
    out << "{\"step\":0,\"loss\":1.5}\n{\"step\":1,\"loss\":null}\n";  // one point, one null
  }
  plot_metrics(run_dir);
  const std::string bytes = read_bytes(run_dir + "/metrics.png");
  ASSERT_GE(bytes.size(), 8u);
  EXPECT_EQ(bytes.substr(1, 3), "PNG");
}

TEST(PlotMetrics, MissingMetricsFileNamesIt) {
  const auto run_dir = data2vec::testing::make_temp_dir("plot-missing");
  try {
    plot_metrics(run_dir);
    FAIL() << "expected an exception";
  } catch (const std::runtime_error& error) {
    EXPECT_NE(std::string(error.what()).find(run_dir + "/metrics.jsonl"), std::string::npos)
        << error.what();
  }
  EXPECT_FALSE(fs::exists(run_dir + "/metrics.png"));
}

TEST(PlotMetrics, EmptyOrUnplottableMetricsThrow) {
  const auto run_dir = data2vec::testing::make_temp_dir("plot-empty");
  { std::ofstream out(run_dir + "/metrics.jsonl"); }
  EXPECT_THROW(plot_metrics(run_dir), std::runtime_error);
  {
    std::ofstream out(run_dir + "/metrics.jsonl");
    out << "{\"loss\":1.0}\n{\"step\":3,\"tau\":0.99}\nnot json\n";  // no step / no plotted key
  }
  try {
    plot_metrics(run_dir);
    FAIL() << "expected an exception";
  } catch (const std::runtime_error& error) {
    EXPECT_NE(std::string(error.what()).find("nothing to plot"), std::string::npos) << error.what();
  }
}

TEST(PlotMetrics, MissingGnuplotSaysWhatToInstall) {
  const auto run_dir = data2vec::testing::make_temp_dir("plot-nognuplot");
  {
    std::ofstream out(run_dir + "/metrics.jsonl");
    out << "{\"step\":0,\"loss\":1.5}\n";
  }
  const char* old_path = std::getenv("PATH");
  const std::string saved = old_path ? old_path : "";
  ::setenv("PATH", run_dir.c_str(), 1);  // a directory with no gnuplot in it
  std::string message;
  try {
    plot_metrics(run_dir);
  } catch (const std::runtime_error& error) {
    message = error.what();
  }
  ::setenv("PATH", saved.c_str(), 1);
  EXPECT_NE(message.find("gnuplot-nox"), std::string::npos) << message;
}

}  // namespace
