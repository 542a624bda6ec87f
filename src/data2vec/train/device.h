// The one place a device and a precision are chosen (`train.device`, `train.precision`).
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

namespace data2vec::train {

// "cpu" | "cuda" | "auto" (cuda when LibTorch has it and a GPU is visible). Asking for cuda on
// a build or machine without it is an error that says so.
torch::Device resolve_device(const std::string& name);

// Mixed precision for the region it lives in: bf16 autocast on CPU or CUDA when `precision` is
// "bf16", nothing for "fp32". Weights stay fp32; restores the previous state on exit.
class AutocastGuard {
 public:
  AutocastGuard(const torch::Device& device, const std::string& precision);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  bool enabled_ = false;
  bool cuda_ = false;
  bool previous_enabled_ = false;
  at::ScalarType previous_dtype_ = at::kBFloat16;
};

// Sets the intra-op thread count; 0 means every core. Returns the count in force.
int set_threads(int64_t threads);

// The BLAS library this process has mapped (its path from /proc/self/maps: OpenBLAS, MKL, BLIS
// or the reference libblas), or "unknown". What `--version` and the benchmarks report.
std::string blas_library();

// Which of the CPU features that decide between fp32 and bf16 this machine has, in this order:
// avx2 (fast fp32), avx512_bf16 (bf16 dot products), amx_bf16 (bf16 tiles), from /proc/cpuinfo.
// bf16 pays off only with the last two; without them bf16 autocast is emulated and slower.
std::vector<std::string> precision_cpu_features();

}  // namespace data2vec::train
