// Helpers shared by the tests: comparison with a readable report, fixture paths.
#pragma once

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>

namespace data2vec::testing {

// Max |a - b|; prints the label, first values and the max difference when above `tolerance`.
::testing::AssertionResult tensors_close(const std::string& label, const torch::Tensor& actual,
                                         const torch::Tensor& expected, double tolerance);

// Path of a committed fixture file under tests/fixtures.
std::string fixture_path(const std::string& name);

// A fresh empty directory under the system temp dir, unique per call.
std::string make_temp_dir(const std::string& prefix);

}  // namespace data2vec::testing
