#include "data2vec/train/device.h"

#include <ATen/autocast_mode.h>

#include <algorithm>
#include <fstream>
#include <iterator>
#include <sstream>
#include <stdexcept>
#include <thread>

#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "data2vec/nn/torch_version.h"

namespace data2vec::train {

torch::Device resolve_device(const std::string& name) {
  if (name == "cpu") return torch::kCPU;
  if (name == "cuda") {
    if (!torch::cuda::is_available()) {
      throw std::invalid_argument(
          "train.device = cuda, but this LibTorch build or machine has no CUDA device (build "
          "against a CUDA LibTorch with -DCMAKE_PREFIX_PATH, or set train.device=cpu)");
    }
    return torch::kCUDA;
  }
  if (name == "auto") return torch::cuda::is_available() ? torch::kCUDA : torch::kCPU;
  throw std::invalid_argument("train.device = '" + name + "': expected cpu, cuda or auto");
}

// LibTorch 2.4 keyed autocast by device type; older versions have per-device functions.
#if DATA2VEC_TORCH_AT_LEAST(2, 4)
#define DATA2VEC_AUTOCAST_BY_DEVICE_TYPE 1
#endif

AutocastGuard::AutocastGuard(const torch::Device& device, const std::string& precision) {
  if (precision != "bf16") return;
  enabled_ = true;
  cuda_ = device.is_cuda();
#ifdef DATA2VEC_AUTOCAST_BY_DEVICE_TYPE
  const auto type = cuda_ ? at::kCUDA : at::kCPU;
  previous_enabled_ = at::autocast::is_autocast_enabled(type);
  previous_dtype_ = at::autocast::get_autocast_dtype(type);
  at::autocast::set_autocast_dtype(type, at::kBFloat16);
  at::autocast::set_autocast_enabled(type, true);
#else
  if (cuda_) {
    previous_enabled_ = at::autocast::is_enabled();
    previous_dtype_ = at::autocast::get_autocast_gpu_dtype();
    at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
    at::autocast::set_enabled(true);
  } else {
    previous_enabled_ = at::autocast::is_cpu_enabled();
    previous_dtype_ = at::autocast::get_autocast_cpu_dtype();
    at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
    at::autocast::set_cpu_enabled(true);
  }
#endif
}

AutocastGuard::~AutocastGuard() {
  if (!enabled_) return;
#ifdef DATA2VEC_AUTOCAST_BY_DEVICE_TYPE
  const auto type = cuda_ ? at::kCUDA : at::kCPU;
  at::autocast::set_autocast_enabled(type, previous_enabled_);
  at::autocast::set_autocast_dtype(type, previous_dtype_);
#else
  if (cuda_) {
    at::autocast::set_enabled(previous_enabled_);
    at::autocast::set_autocast_gpu_dtype(previous_dtype_);
  } else {
    at::autocast::set_cpu_enabled(previous_enabled_);
    at::autocast::set_autocast_cpu_dtype(previous_dtype_);
  }
#endif
  // Cached bf16 copies of the weights are stale after the optimizer step.
  at::autocast::clear_cache();
}

int set_threads(int64_t threads) {
  const int n = threads > 0 ? int(threads) : int(std::max(1u, std::thread::hardware_concurrency()));
  torch::set_num_threads(n);
  return torch::get_num_threads();
}

bool keep_freed_memory() {
#ifdef __GLIBC__
  constexpr int kMmapThreshold = 32 << 20;  // glibc's largest (HEAP_MAX_SIZE / 2 on 64-bit)
  // Never trim (mallopt(3): -1 disables it). A 1 GiB threshold still gave the heap's top back
  // at vision-tiny batch 128, a 6.5 GB step, and every step faulted it in again: 9.5-10.0 s a
  // step against 4.9-5.3 (2026-12-03).
  constexpr int kTrimThreshold = -1;
  // Blocks above the threshold (an audio batch's first conv activations: 52 MB) would still get
  // an mmap of their own, and be faulted in and zeroed again every step: no mmapped blocks at
  // all from the main heap, where the steps run (a thread arena too small for such a block
  // still falls back to an mmap: allocations never fail for it).
  return mallopt(M_MMAP_THRESHOLD, kMmapThreshold) == 1 &&
         mallopt(M_TRIM_THRESHOLD, kTrimThreshold) == 1 && mallopt(M_MMAP_MAX, 0) == 1;
#else
  return false;
#endif
}

std::string blas_library() {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    for (const char* name : {"openblas", "libmkl", "blis", "libblas.so"}) {
      if (line.find(name) != std::string::npos) {
        const auto slash = line.find('/');
        return slash == std::string::npos ? name : line.substr(slash);
      }
    }
  }
  return "unknown";
}

std::vector<std::string> precision_cpu_features() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  while (std::getline(cpuinfo, line)) {
    if (line.rfind("flags", 0) != 0) continue;  // the first CPU's flags speak for all
    std::istringstream words(line.substr(line.find(':') + 1));
    std::vector<std::string> flags{std::istream_iterator<std::string>(words), {}};
    std::vector<std::string> found;
    for (const char* feature : {"avx2", "avx512_bf16", "amx_bf16"}) {
      if (std::find(flags.begin(), flags.end(), feature) != flags.end()) found.push_back(feature);
    }
    return found;
  }
  return {};
}

}  // namespace data2vec::train
