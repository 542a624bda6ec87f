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

// Adam with decoupled weight decay per `config` (optim.name adam, fairseq's Adam, and adamw are
// the same update); group 0 decays, group 1 does not. The learning rate is set every step by the
// trainer.
std::unique_ptr<torch::optim::Optimizer> make_optimizer(const ParameterGroups& groups,
                                                        const io::OptimConfig& config);

// Sets the learning rate of every group.
void set_learning_rate(torch::optim::Optimizer& optimizer, double lr);

}  // namespace data2vec::train
