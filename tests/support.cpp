#include "support.h"

#include <filesystem>
#include <random>
#include <sstream>

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
  return ::testing::AssertionFailure() << label << ": max |diff| " << max_diff << " > tolerance "
                                       << tolerance << "; first values (actual vs expected):"
                                       << first.str();
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

}  // namespace data2vec::testing
