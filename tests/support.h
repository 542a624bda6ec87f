// Helpers shared by the tests: comparison with a readable report, fixture paths.
#pragma once

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <functional>
#include <string>

namespace data2vec::testing {

// Max |a - b|; prints the label, first values and the max difference when above `tolerance`.
::testing::AssertionResult tensors_close(const std::string& label, const torch::Tensor& actual,
                                         const torch::Tensor& expected, double tolerance);

// Path of a committed fixture file under tests/fixtures.
std::string fixture_path(const std::string& name);

// A fresh empty directory under the system temp dir, unique per call.
std::string make_temp_dir(const std::string& prefix);

// Runs a shell command with stdout and stderr captured to a log private to this test process
// (ctest runs tests of one suite in parallel, so a shared log path would be overwritten);
// returns std::system's status. `last_command_output` reads what the latest one printed.
int run_command(const std::string& command);
std::string last_command_output();

// The message of the exception `fn` throws; "" when it throws none.
std::string error_of(const std::function<void()>& fn);

// Writes an image uint8 [H,W,C] (C = 1 or 3) as PNG; returns false on failure.
bool write_png(const std::string& path, const torch::Tensor& image);

}  // namespace data2vec::testing
