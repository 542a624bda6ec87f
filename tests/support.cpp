#include "support.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <sstream>

// stb's writer, private to this file (test_vision_data.cpp has its own copy).
#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STB_IMAGE_WRITE_STATIC
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wunused-function"
#include <stb_image_write.h>
#pragma GCC diagnostic pop

namespace data2vec::testing {

::testing::AssertionResult tensors_close(const std::string& label, const torch::Tensor& actual,
                                         const torch::Tensor& expected, double tolerance) {
  if (actual.sizes() != expected.sizes()) {
    return ::testing::AssertionFailure()
           << label << ": shape " << actual.sizes() << " != expected " << expected.sizes();
  }
  const auto a = actual.detach().to(torch::kFloat64).cpu().flatten();
  const auto e = expected.detach().to(torch::kFloat64).cpu().flatten();
  const double max_diff = a.numel() == 0 ? 0.0 : (a - e).abs().max().item<double>();
  if (max_diff <= tolerance) return ::testing::AssertionSuccess();
  std::ostringstream first;
  const auto n = std::min<int64_t>(4, a.numel());
  for (int64_t i = 0; i < n; ++i) {
    first << " (" << a[i].item<double>() << " vs " << e[i].item<double>() << ")";
  }
  return ::testing::AssertionFailure()
         << label << ": max |diff| " << max_diff << " > tolerance " << tolerance
         << "; first values (actual vs expected):" << first.str();
}

std::string fixture_path(const std::string& name) {
  return std::string(DATA2VEC_FIXTURES_DIR) + "/" + name;
}

std::string make_temp_dir(const std::string& prefix) {
  std::random_device rd;
  auto dir = std::filesystem::temp_directory_path() /
             (prefix + "-" + std::to_string(rd()) + std::to_string(rd()));
  std::filesystem::create_directories(dir);
  return dir.string();
}

namespace {
const std::string& command_log_path() {
  static const std::string path = make_temp_dir("d2v-cmd") + "/output.log";
  return path;
}
}  // namespace

int run_command(const std::string& command) {
  return std::system((command + " > '" + command_log_path() + "' 2>&1").c_str());
}

bool write_png(const std::string& path, const torch::Tensor& image) {
  const auto pixels = image.to(torch::kUInt8).contiguous();
  const int h = int(pixels.size(0)), w = int(pixels.size(1)), c = int(pixels.size(2));
  return stbi_write_png(path.c_str(), w, h, c, pixels.data_ptr<uint8_t>(), w * c) != 0;
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

std::string last_command_output() {
  std::ifstream in(command_log_path(), std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

}  // namespace data2vec::testing
