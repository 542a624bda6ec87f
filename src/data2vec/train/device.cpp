#include "data2vec/train/device.h"

#include <ATen/autocast_mode.h>

#include <stdexcept>
#include <thread>

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

AutocastGuard::AutocastGuard(const torch::Device& device, const std::string& precision) {
  if (precision != "bf16") return;
  enabled_ = true;
  cuda_ = device.is_cuda();
  if (cuda_) {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
    previous_ = at::autocast::is_autocast_enabled(at::kCUDA);
    at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
    at::autocast::set_autocast_enabled(at::kCUDA, true);
#else
    previous_ = at::autocast::is_enabled();
    at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
    at::autocast::set_enabled(true);
#endif
  } else {
    previous_ = at::autocast::is_cpu_enabled();
    at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
    at::autocast::set_cpu_enabled(true);
  }
}

AutocastGuard::~AutocastGuard() {
  if (!enabled_) return;
  if (cuda_) {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
    at::autocast::set_autocast_enabled(at::kCUDA, previous_);
#else
    at::autocast::set_enabled(previous_);
#endif
  } else {
    at::autocast::set_cpu_enabled(previous_);
  }
  // Cached bf16 copies of the weights are stale after the optimizer step.
  at::autocast::clear_cache();
}

int set_threads(int64_t threads) {
  const int n = threads > 0 ? int(threads) : int(std::max(1u, std::thread::hardware_concurrency()));
  torch::set_num_threads(n);
  return torch::get_num_threads();
}

}  // namespace data2vec::train
