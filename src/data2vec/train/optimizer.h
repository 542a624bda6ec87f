// Optimizer construction: Adam / AdamW with two parameter groups (decayed, not decayed).
#pragma once

#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "data2vec/io/config.h"

namespace data2vec::train {

// True for parameters that get no weight decay: biases, norms, layer scales (anything of one
// dimension or less), and tokens / position tables / relative position bias tables by name.
bool exempt_from_weight_decay(const std::string& name, const torch::Tensor& parameter);

// Splits `named` (trainable parameters only) into {decayed, exempt} groups.
struct ParameterGroups {
  std::vector<torch::Tensor> decayed;
  std::vector<torch::Tensor> exempt;
};
ParameterGroups split_parameter_groups(
    const std::vector<std::pair<std::string, torch::Tensor>>& named);

// LibTorch's AdamW with a step that updates each CPU fp32 parameter in one pass: weight decay,
// both moments and the parameter read and written once (LibTorch's step runs nine tensor ops per
// parameter, ~3x the memory traffic: 11.3 against 4-5 ms on vision-tiny's 5.5M parameters).
// The same arithmetic in fp32, the same state (AdamWParamState) and the same serialisation, so
// checkpoints move between the two. Parameters on other devices or dtypes, sparse or strided
// gradients, and amsgrad take AdamW::step.
class FusedAdamW : public torch::optim::AdamW {
 public:
  using torch::optim::AdamW::AdamW;
  torch::Tensor step(LossClosure closure = nullptr) override;
};

// FusedAdamW (Adam with decoupled weight decay) per `config` (optim.name adam, fairseq's Adam,
// and adamw are the same update); group 0 decays, group 1 does not. The learning rate is set
// every step by the trainer.
std::unique_ptr<torch::optim::Optimizer> make_optimizer(const ParameterGroups& groups,
                                                        const io::OptimConfig& config);

// torch::nn::utils::clip_grad_norm_ (the 2-norm over every gradient) for CPU fp32 gradients in
// two passes at most: the norm in one parallel region, the scaling (only when the norm is over
// max_norm) in another; LibTorch's runs two tensor ops per parameter and always scales (4.1
// against ~1 ms on vision-tiny's 213 parameters). The squares are summed in float lanes per
// chunk of 16384 and in double across chunks. Returns the norm before clipping. Any other
// gradient (device, dtype, layout) sends the call to LibTorch's.
double clip_grad_norm(const std::vector<torch::Tensor>& parameters, double max_norm);

// The optimizer's state of parameter p (AdamWParamState for ours), or nullptr before p's first
// step. Optimizer::state() is keyed by p's TensorImpl: its address as a string in LibTorch 1.13,
// the pointer itself from 2.0 on.
const torch::optim::OptimizerParamState* parameter_state(const torch::optim::Optimizer& optimizer,
                                                         const torch::Tensor& p);

// Sets parameter p's optimizer state, under the key parameter_state looks up.
void set_parameter_state(torch::optim::Optimizer& optimizer, const torch::Tensor& p,
                         std::unique_ptr<torch::optim::OptimizerParamState> state);

// Sets the learning rate of every group.
void set_learning_rate(torch::optim::Optimizer& optimizer, double lr);

}  // namespace data2vec::train
