#include "data2vec/train/distributed.h"

#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <cstdlib>
#include <stdexcept>

#ifdef DATA2VEC_HAVE_GLOO
#define USE_C10D_GLOO 1
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#ifdef DATA2VEC_HAVE_NCCL
#define USE_C10D_NCCL 1
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include "data2vec/nn/torch_version.h"

namespace data2vec::train {

namespace {

// LibTorch 2 split the collective implementations (Backend) from the ProcessGroup facade.
#if TORCH_VERSION_MAJOR >= 2
using Collectives = c10d::Backend;
#else
using Collectives = c10d::ProcessGroup;
#endif

std::optional<std::string> env(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return std::nullopt;
  return std::string(value);
}

int env_int(const char* name, int fallback) {
  const auto value = env(name);
  if (!value) return fallback;
  try {
    size_t used = 0;
    const int parsed = std::stoi(*value, &used);
    if (used != value->size()) throw std::invalid_argument("trailing characters");
    return parsed;
  } catch (const std::exception&) {
    throw std::invalid_argument(std::string("environment variable ") + name + "='" + *value +
                                "' is not an integer");
  }
}

}  // namespace

std::optional<DistributedOptions> distributed_options_from_env() {
  DistributedOptions o;
  if (env("WORLD_SIZE")) {
    o.world_size = env_int("WORLD_SIZE", 1);
    o.rank = env_int("RANK", 0);
    o.local_rank = env_int("LOCAL_RANK", o.rank);
  } else if (env("SLURM_NTASKS")) {
    o.world_size = env_int("SLURM_NTASKS", 1);
    o.rank = env_int("SLURM_PROCID", 0);
    o.local_rank = env_int("SLURM_LOCALID", o.rank);
  } else {
    return std::nullopt;
  }
  if (o.world_size < 1) throw std::invalid_argument("WORLD_SIZE must be >= 1");
  if (o.rank < 0 || o.rank >= o.world_size) {
    throw std::invalid_argument("RANK=" + std::to_string(o.rank) + " is outside [0, WORLD_SIZE=" +
                                std::to_string(o.world_size) + ")");
  }
  o.master_addr = env("MASTER_ADDR").value_or("127.0.0.1");
  o.master_port = env_int("MASTER_PORT", 29500);
  if (o.master_port <= 0 || o.master_port > 65535) {
    throw std::invalid_argument("MASTER_PORT=" + std::to_string(o.master_port) + " is not a port");
  }
  o.agent_hosts_store = env("TORCHELASTIC_USE_AGENT_STORE").value_or("") == "True";
  return o;
}

bool has_gloo() {
#ifdef DATA2VEC_HAVE_GLOO
  return true;
#else
  return false;
#endif
}

bool has_nccl() {
#ifdef DATA2VEC_HAVE_NCCL
  return true;
#else
  return false;
#endif
}

struct ProcessGroup::State {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<Collectives> collectives;
  std::chrono::milliseconds timeout{0};
};

namespace {

// A collective's failure, said in terms of the run: which rank saw it, and the likely cause.
[[noreturn]] void rethrow_collective(const ProcessGroup& group, const char* what,
                                     const std::exception& e) {
  throw std::runtime_error("distributed " + std::string(what) + " failed on rank " +
                           std::to_string(group.rank()) + " of " +
                           std::to_string(group.world_size()) + " (" + group.backend() +
                           "): another rank probably stopped or timed out; see its log. Cause: " +
                           e.what());
}

class PendingWork : public ProcessGroup::Pending {
 public:
  PendingWork(c10::intrusive_ptr<c10d::Work> work, const ProcessGroup& group,
              std::chrono::milliseconds timeout)
      : work_(std::move(work)), group_(group), timeout_(timeout) {}
  void wait() override {
    try {
      work_->wait(timeout_);
    } catch (const std::exception& e) {
      rethrow_collective(group_, "all-reduce", e);
    }
  }

 private:
  c10::intrusive_ptr<c10d::Work> work_;
  const ProcessGroup& group_;
  std::chrono::milliseconds timeout_;
};

}  // namespace

ProcessGroup::ProcessGroup(const DistributedOptions& options, const torch::Device& device)
    : options_(options),
      device_(device.is_cuda() ? torch::Device(torch::kCUDA, int8_t(options.local_rank))
                               : torch::Device(torch::kCPU)),
      state_(std::make_unique<State>()) {
  backend_ = options.backend == "auto" ? (device.is_cuda() ? "nccl" : "gloo") : options.backend;
  if (backend_ != "gloo" && backend_ != "nccl") {
    throw std::invalid_argument("train.dist_backend = '" + backend_ + "': expected auto, gloo or nccl");
  }
  if (backend_ == "gloo" && !has_gloo()) {
    throw std::invalid_argument(
        "this build has no Gloo backend (gloo headers were not found at configure time; on "
        "Debian install libgloo-dev and rebuild)");
  }
  if (backend_ == "nccl" && !has_nccl()) {
    throw std::invalid_argument(
        "this build has no NCCL backend (build against a CUDA LibTorch with nccl.h visible, or "
        "set train.dist_backend=gloo)");
  }
  if (backend_ == "nccl" && !device.is_cuda()) {
    throw std::invalid_argument("train.dist_backend = nccl needs train.device = cuda");
  }
  state_->timeout = std::chrono::duration_cast<std::chrono::milliseconds>(options.timeout);

  c10d::TCPStoreOptions store_options;
  store_options.port = uint16_t(options.master_port);
  store_options.isServer = options.rank == 0 && !options.agent_hosts_store;
  store_options.numWorkers = size_t(options.world_size);
  store_options.waitWorkers = false;
  store_options.timeout = state_->timeout;
  const auto open_store = [&] {
    return c10::make_intrusive<c10d::TCPStore>(options.master_addr, store_options);
  };
  try {
    try {
      state_->store = open_store();
    } catch (const c10::Error& e) {
#if DATA2VEC_TORCH_AT_LEAST(2, 4)
      // From 2.4 the store asks for its libuv server by default, which LibTorch builds without
      // libuv (Debian's) refuse; the classic server is in every build.
      if (std::string(e.what_without_backtrace()).find("libuv") == std::string::npos) throw;
      store_options.useLibUV = false;
      state_->store = open_store();
#else
      throw;
#endif
    }
  } catch (const std::exception& e) {
    throw std::runtime_error("rank " + std::to_string(options.rank) +
                             ": could not reach the rendezvous store at " + options.master_addr +
                             ":" + std::to_string(options.master_port) + ": " + e.what());
  }

  if (backend_ == "gloo") {
#ifdef DATA2VEC_HAVE_GLOO
    auto gloo_options = c10d::ProcessGroupGloo::Options::create(state_->timeout);
    if (const auto interface = env("GLOO_SOCKET_IFNAME")) {
      gloo_options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(*interface));
    } else if (options.master_addr == "localhost" || options.master_addr.rfind("127.", 0) == 0) {
      gloo_options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
    } else {
      gloo_options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    }
    state_->collectives = c10::make_intrusive<c10d::ProcessGroupGloo>(
        state_->store, options.rank, options.world_size, gloo_options);
#endif
  } else {
#ifdef DATA2VEC_HAVE_NCCL
    auto nccl_options = c10d::ProcessGroupNCCL::Options::create();
    nccl_options->timeout = state_->timeout;
    state_->collectives = c10::make_intrusive<c10d::ProcessGroupNCCL>(
        state_->store, options.rank, options.world_size, nccl_options);
#endif
  }
}

ProcessGroup::~ProcessGroup() = default;

std::unique_ptr<ProcessGroup::Pending> ProcessGroup::all_reduce_sum_async(torch::Tensor& tensor) {
  std::vector<torch::Tensor> tensors{tensor};
  try {
    return std::make_unique<PendingWork>(state_->collectives->allreduce(tensors), *this,
                                         state_->timeout);
  } catch (const std::exception& e) {
    rethrow_collective(*this, "all-reduce", e);
  }
}

void ProcessGroup::all_reduce_sum(torch::Tensor& tensor) {
  all_reduce_sum_async(tensor)->wait();
}

void ProcessGroup::broadcast(torch::Tensor& tensor) {
  std::vector<torch::Tensor> tensors{tensor};
  try {
    state_->collectives->broadcast(tensors)->wait(state_->timeout);
  } catch (const std::exception& e) {
    rethrow_collective(*this, "broadcast", e);
  }
}

std::vector<torch::Tensor> ProcessGroup::all_gather(const torch::Tensor& tensor) {
  std::vector<torch::Tensor> input{tensor.contiguous()};
  std::vector<std::vector<torch::Tensor>> output(1);
  for (int r = 0; r < world_size(); ++r) output[0].push_back(torch::empty_like(input[0]));
  try {
    state_->collectives->allgather(output, input)->wait(state_->timeout);
  } catch (const std::exception& e) {
    rethrow_collective(*this, "all-gather", e);
  }
  return output[0];
}

void ProcessGroup::barrier() {
  // A one-element all-reduce: a barrier that works the same on every backend.
  auto token = torch::zeros({1}, collective_device());
  all_reduce_sum(token);
}

void broadcast_module_state(ProcessGroup& group, torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  for (auto& p : module.parameters()) group.broadcast(p);
  for (auto& b : module.buffers()) group.broadcast(b);
}

GradientSync::GradientSync(ProcessGroup& group, std::vector<torch::Tensor> parameters,
                           double bucket_mb)
    : group_(group), parameters_(std::move(parameters)) {
  const int64_t bucket_elements = std::max<int64_t>(1, int64_t(bucket_mb * 1024 * 1024 / 4));
  bucket_of_.resize(parameters_.size());
  offset_of_.resize(parameters_.size());
  had_gradient_.assign(parameters_.size(), false);
  // Reverse order: the last layers' gradients come first in backward.
  int64_t filled = bucket_elements;
  for (size_t k = parameters_.size(); k-- > 0;) {
    const auto& p = parameters_[k];
    if (filled + p.numel() > bucket_elements && filled > 0) {
      buckets_.emplace_back();
      filled = 0;
    }
    auto& bucket = buckets_.back();
    TORCH_CHECK(bucket.members.empty() ||
                    (parameters_[bucket.members.front()].scalar_type() == p.scalar_type() &&
                     parameters_[bucket.members.front()].device() == p.device()),
                "GradientSync: parameters of one bucket must share dtype and device");
    bucket_of_[k] = buckets_.size() - 1;
    offset_of_[k] = filled;
    bucket.members.push_back(k);
    filled += p.numel();
  }
  for (auto& bucket : buckets_) {
    int64_t size = 0;
    for (auto k : bucket.members) size += parameters_[k].numel();
    const auto& first = parameters_[bucket.members.front()];
    bucket.flat = torch::zeros({size}, first.options().requires_grad(false));
  }
  for (size_t k = 0; k < parameters_.size(); ++k) {
    hook_handles_.push_back(parameters_[k].register_hook(
        [this, k](const torch::Tensor& grad) { on_gradient(k, grad); }));
  }
}

GradientSync::~GradientSync() {
  for (size_t k = 0; k < parameters_.size(); ++k) parameters_[k].remove_hook(hook_handles_[k]);
}

void GradientSync::arm() {
  armed_ = true;
  for (auto& bucket : buckets_) {
    bucket.ready = 0;
    bucket.pending.reset();
  }
  std::fill(had_gradient_.begin(), had_gradient_.end(), false);
}

void GradientSync::on_gradient(size_t index, const torch::Tensor& grad) {
  if (!armed_) return;
  // The hook runs before autograd accumulates into .grad: add what earlier micro-batches left.
  torch::NoGradGuard no_grad;
  auto& bucket = buckets_[bucket_of_[index]];
  const auto& p = parameters_[index];
  auto slot = bucket.flat.narrow(0, offset_of_[index], p.numel()).view_as(p);
  if (p.grad().defined()) {
    torch::add_out(slot, p.grad(), grad);
  } else {
    slot.copy_(grad);
  }
  had_gradient_[index] = true;
  if (++bucket.ready == int64_t(bucket.members.size())) launch(bucket);
}

void GradientSync::launch(Bucket& bucket) {
  bucket.pending = group_.all_reduce_sum_async(bucket.flat);
}

void GradientSync::finish() {
  TORCH_CHECK(armed_, "GradientSync::finish without arm()");
  armed_ = false;
  torch::NoGradGuard no_grad;
  for (auto& bucket : buckets_) {
    if (!bucket.pending) {
      // Some member produced no gradient here: it contributes zeros (other ranks may have one).
      for (auto k : bucket.members) {
        if (!had_gradient_[k]) {
          bucket.flat.narrow(0, offset_of_[k], parameters_[k].numel()).zero_();
        }
      }
      launch(bucket);
    }
  }
  const double scale = 1.0 / double(group_.world_size());
  for (auto& bucket : buckets_) {
    bucket.pending->wait();
    bucket.pending.reset();
    bucket.flat.mul_(scale);
    for (auto k : bucket.members) {
      auto& p = parameters_[k];
      // A parameter no rank-local pass touched keeps no gradient, as without distribution.
      if (!had_gradient_[k] && !p.grad().defined()) continue;
      auto average = bucket.flat.narrow(0, offset_of_[k], p.numel()).view_as(p);
      if (p.grad().defined()) {
        p.mutable_grad().copy_(average);
      } else {
        p.mutable_grad() = average.clone();
      }
    }
  }
}

}  // namespace data2vec::train
