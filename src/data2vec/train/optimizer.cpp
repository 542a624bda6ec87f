#include "data2vec/train/optimizer.h"

namespace data2vec::train {

bool exempt_from_weight_decay(const std::string& name, const torch::Tensor& parameter) {
  if (parameter.dim() <= 1) return true;
  for (const char* marker :
       {"token", "position", "relative_position_bias_table", "masked_spec_embed"}) {
    if (name.find(marker) != std::string::npos) return true;
  }
  return false;
}

ParameterGroups split_parameter_groups(
    const std::vector<std::pair<std::string, torch::Tensor>>& named) {
  ParameterGroups groups;
  for (const auto& [name, p] : named) {
    if (!p.requires_grad()) continue;
    (exempt_from_weight_decay(name, p) ? groups.exempt : groups.decayed).push_back(p);
  }
  return groups;
}

namespace {

template <typename Options>
std::vector<torch::optim::OptimizerParamGroup> make_groups(const ParameterGroups& groups,
                                                           const Options& decayed_options) {
  auto exempt_options = std::make_unique<Options>(decayed_options);
  exempt_options->weight_decay(0.0);
  std::vector<torch::optim::OptimizerParamGroup> out;
  out.emplace_back(groups.decayed, std::make_unique<Options>(decayed_options));
  out.emplace_back(groups.exempt, std::move(exempt_options));
  return out;
}

}  // namespace

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const ParameterGroups& groups,
                                                        const io::OptimConfig& config) {
  // "adam" is fairseq's Adam (fairseq/optim/adam.py), which the data2vec speech and text recipes
  // name: it decays the weights apart from the gradient (p -= lr * wd * p before the Adam step,
  // "Fixing Weight Decay Regularization in Adam", arXiv 1711.05101), exactly what AdamW does.
  // LibTorch's Adam would add wd * p to the gradient instead (L2), which Adam's per-parameter
  // scaling turns into a much weaker and uneven decay. (fairseq adds eps before the bias
  // correction of the second moment, LibTorch after: a difference of eps * sqrt(1 - beta2^t).)
  if (config.name == "adamw" || config.name == "adam") {
    auto options = torch::optim::AdamWOptions(config.lr)
                       .betas({config.beta1, config.beta2})
                       .eps(config.eps)
                       .weight_decay(config.weight_decay);
    return std::make_unique<torch::optim::AdamW>(make_groups(groups, options), options);
  }
  throw std::invalid_argument("config key 'optim.name' = '" + config.name +
                              "': expected adam or adamw");
}

void set_learning_rate(torch::optim::Optimizer& optimizer, double lr) {
  for (auto& group : optimizer.param_groups()) group.options().set_lr(lr);
}

}  // namespace data2vec::train
