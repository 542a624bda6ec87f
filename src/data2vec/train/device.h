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

// Keeps the memory that tensors free inside the process for the next step instead of returning
// it to the kernel. glibc hands blocks over its mmap threshold back with munmap and trims the
// heap top on free, so a training step that allocates the same activations every time pays page
// faults and zeroing for megabytes each step: on the data2vec 2.0 demo step (fmnist-tiny-v2,
// 2 cores) 0.35-0.58 s with glibc's defaults, 0.26-0.30 s kept (BENCHMARKS.md). Sets
// M_MMAP_THRESHOLD to glibc's ceiling (32 MiB on 64-bit), M_MMAP_MAX to 0 (larger blocks come
// from the heap too: the audio-tiny step 1.14-1.20 s -> 0.92-0.94 s) and turns trimming off
// (M_TRIM_THRESHOLD -1: a 1 GiB threshold still returned the top of a 6.5 GB step at batch 128);
// peak RSS is unchanged. A process-wide setting, made
// once by the programs (`data2vec`, `data2vec_bench`), never by the library on its own. Returns
// false where it cannot apply (not glibc, or mallopt refused).
bool keep_freed_memory();

// The BLAS library this process has mapped (its path from /proc/self/maps: OpenBLAS, MKL, BLIS
// or the reference libblas), or "unknown". What `--version` and the benchmarks report.
std::string blas_library();

// Which of the CPU features that decide between fp32 and bf16 this machine has, in this order:
// avx2 (fast fp32), avx512_bf16 (bf16 dot products), amx_bf16 (bf16 tiles), from /proc/cpuinfo.
// bf16 pays off only with the last two; without them bf16 autocast is emulated and slower.
std::vector<std::string> precision_cpu_features();

}  // namespace data2vec::train
