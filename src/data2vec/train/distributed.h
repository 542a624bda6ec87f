// Data-parallel training on PyTorch's own distributed engine (c10d): ProcessGroupGloo on CPU,
// ProcessGroupNCCL on CUDA. Every process holds the whole model, reads its own shard of each
// global batch, and averages gradients before the optimizer step, so the student, the optimizer
// state and therefore the EMA teacher stay identical on all ranks.
//
// Rendezvous follows torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
// MASTER_PORT); Slurm's (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID) is read when torchrun's is
// absent. Rank 0 hosts the TCPStore unless torchrun's agent already does
// (TORCHELASTIC_USE_AGENT_STORE=True).
#pragma once

#include <torch/torch.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace data2vec::train {

struct DistributedOptions {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  std::string backend = "auto";  // auto (nccl on cuda, gloo on cpu) | gloo | nccl
  std::chrono::seconds timeout{300};
  bool agent_hosts_store = false;  // torchrun's agent runs the TCPStore: every rank is a client
};

// The launcher's environment, or nullopt when this process was started alone. Malformed values
// are errors that name the variable.
std::optional<DistributedOptions> distributed_options_from_env();

// True when this LibTorch build (and this program) can use the backend.
bool has_gloo();
bool has_nccl();

// One process group for the run. Collectives block until every rank has joined; a peer that
// died makes them throw (a clear error naming this rank) instead of hanging past the timeout.
class ProcessGroup {
 public:
  // Connects to the other ranks. `device` decides the backend when options.backend is auto.
  ProcessGroup(const DistributedOptions& options, const torch::Device& device);
  ~ProcessGroup();
  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

  int rank() const { return options_.rank; }
  int world_size() const { return options_.world_size; }
  bool is_main() const { return options_.rank == 0; }
  int local_rank() const { return options_.local_rank; }
  // This rank's device: the CPU, or cuda:LOCAL_RANK.
  const torch::Device& device() const { return device_; }
  // Where tensors handed to the collectives must live (NCCL: the GPU; Gloo: the CPU).
  torch::Device collective_device() const { return backend_ == "nccl" ? device_ : torch::kCPU; }
  const std::string& backend() const { return backend_; }

  // In place: the sum over ranks (async: returns a handle to wait on).
  class Pending {
   public:
    virtual ~Pending() = default;
    virtual void wait() = 0;
  };
  std::unique_ptr<Pending> all_reduce_sum_async(torch::Tensor& tensor);
  void all_reduce_sum(torch::Tensor& tensor);
  // In place: rank 0's values everywhere.
  void broadcast(torch::Tensor& tensor);
  // Every rank's `tensor` (same shape on all ranks), in rank order.
  std::vector<torch::Tensor> all_gather(const torch::Tensor& tensor);
  void barrier();

 private:
  struct State;
  DistributedOptions options_;
  std::string backend_;
  torch::Device device_{torch::kCPU};
  std::unique_ptr<State> state_;
};

// Makes every rank's module state rank 0's (parameters and buffers, in place).
void broadcast_module_state(ProcessGroup& group, torch::nn::Module& module);

// Bucketed gradient averaging, overlapped with the backward pass: each parameter's gradient is
// copied into its bucket as autograd produces it, and a bucket's all-reduce starts as soon as
// its last gradient arrives, while backward goes on with earlier layers. Buckets are filled in
// reverse registration order, the order backward produces gradients. finish() waits for the
// buckets and writes the averages into .grad. With accumulation, arm only the last micro-batch's
// backward: the hook adds what .grad already holds.
class GradientSync {
 public:
  GradientSync(ProcessGroup& group, std::vector<torch::Tensor> parameters, double bucket_mb = 25.0);
  ~GradientSync();
  GradientSync(const GradientSync&) = delete;
  GradientSync& operator=(const GradientSync&) = delete;

  // The next backward pass is the step's last: its gradients are reduced as they come.
  void arm();
  // Waits for every bucket (launching any whose gradients never came) and writes the averages.
  void finish();
  int64_t num_buckets() const { return int64_t(buckets_.size()); }

 private:
  struct Bucket {
    std::vector<size_t> members;  // parameter indices
    torch::Tensor flat;           // fp32 buffer holding the members' gradients
    int64_t ready = 0;
    std::unique_ptr<ProcessGroup::Pending> pending;
  };
  void on_gradient(size_t index, const torch::Tensor& grad);
  void launch(Bucket& bucket);

  ProcessGroup& group_;
  std::vector<torch::Tensor> parameters_;
  std::vector<size_t> bucket_of_;  // parameter -> bucket
  std::vector<int64_t> offset_of_;  // parameter -> element offset in its bucket
  std::vector<bool> had_gradient_;
  std::vector<Bucket> buckets_;
  std::vector<unsigned> hook_handles_;
  bool armed_ = false;
};

}  // namespace data2vec::train
