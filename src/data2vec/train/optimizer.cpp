#include "data2vec/train/optimizer.h"

#include <ATen/Parallel.h>

#include <cmath>
#include <sstream>
#include <type_traits>

#include "data2vec/nn/vec_math.h"

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

// The per-step constants of one parameter, as LibTorch's AdamW::step rounds them to fp32.
struct AdamWConstants {
  float decay = 1.0f;  // 1 - lr * weight_decay
  float beta1 = 0.0f, one_minus_beta1 = 0.0f, beta2 = 0.0f, one_minus_beta2 = 0.0f;
  float sqrt_bias_correction2 = 1.0f, eps = 0.0f, neg_step_size = 0.0f;  // -lr / bias_correction1
};

// AdamW::step's ops in its order, element by element: p *= decay; m = m beta1 + (1 - beta1) g;
// v = v beta2 + (1 - beta2) g^2; p += -step_size m / (sqrt(v) / sqrt(bc2) + eps).
// (optimizer.cpp is compiled with -fno-math-errno: with errno, GCC keeps sqrt scalar.)
DATA2VEC_VECTOR_CLONES
void adamw_update(float* p, const float* g, float* m, float* v, int64_t n,
                  const AdamWConstants& c) {
  for (int64_t i = 0; i < n; ++i) {
    const float mi = m[i] * c.beta1 + c.one_minus_beta1 * g[i];
    const float vi = v[i] * c.beta2 + c.one_minus_beta2 * (g[i] * g[i]);
    m[i] = mi;
    v[i] = vi;
    const float denom = __builtin_sqrtf(vi) / c.sqrt_bias_correction2 + c.eps;
    p[i] = p[i] * c.decay + c.neg_step_size * (mi / denom);
  }
}

// Optimizer::state_ is keyed by the parameter's TensorImpl: its address as a string in LibTorch
// 1.13 (written through an ostringstream, as c10::guts::to_string does), the pointer itself in
// later releases, which no longer have that function (see parameter_state in optimizer.h).
template <typename Map>
typename Map::key_type state_key(const Map&, const torch::Tensor& p) {
  if constexpr (std::is_same_v<typename Map::key_type, std::string>) {
    std::ostringstream address;
    address << p.unsafeGetTensorImpl();
    return address.str();
  } else {
    return p.unsafeGetTensorImpl();
  }
}

bool dense_cpu_fp32(const torch::Tensor& t, const torch::Tensor& like) {
  return !t.is_sparse() && t.device().is_cpu() && t.scalar_type() == torch::kFloat32 &&
         t.is_contiguous() && t.sizes() == like.sizes();
}

// The work of the fused step and the gradient norm: every tensor cut into fixed chunks of
// kChunk elements (so results follow the data, not the thread count), one parallel region over
// all of them. fn(tensor index, first element, length).
constexpr int64_t kChunk = 16384;

template <typename Fn>
void for_each_chunk(const std::vector<int64_t>& numels, const Fn& fn) {
  std::vector<std::pair<size_t, int64_t>> chunks;  // (tensor, first element)
  for (size_t i = 0; i < numels.size(); ++i) {
    for (int64_t begin = 0; begin < numels[i]; begin += kChunk) chunks.emplace_back(i, begin);
  }
  at::parallel_for(0, int64_t(chunks.size()), 1, [&](int64_t first, int64_t last) {
    for (int64_t k = first; k < last; ++k) {
      const auto& [i, begin] = chunks[size_t(k)];
      fn(i, begin, std::min(kChunk, numels[i] - begin));
    }
  });
}

}  // namespace

torch::Tensor FusedAdamW::step(LossClosure closure) {
  for (auto& group : param_groups_) {  // anything else: LibTorch's step, before any change
    const auto& options = static_cast<const torch::optim::AdamWOptions&>(group.options());
    for (const auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      if (options.amsgrad() || !dense_cpu_fp32(p, p) || !dense_cpu_fp32(p.grad(), p))
        return torch::optim::AdamW::step(closure);
    }
  }
  torch::NoGradGuard no_grad;
  torch::Tensor loss;
  if (closure != nullptr) {
    at::AutoGradMode enable_grad(true);
    loss = closure();
  }
  struct Item {
    float *p, *m, *v;
    const float* g;
    AdamWConstants c;
  };
  std::vector<Item> items;
  std::vector<int64_t> numels;
  for (auto& group : param_groups_) {
    const auto& options = static_cast<const torch::optim::AdamWOptions&>(group.options());
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      const auto key = state_key(state_, p);
      auto found = state_.find(key);
      if (found == state_.end()) {  // as AdamW::step starts a parameter's state
        auto state = std::make_unique<torch::optim::AdamWParamState>();
        state->step(0);
        state->exp_avg(torch::zeros_like(p, torch::MemoryFormat::Preserve));
        state->exp_avg_sq(torch::zeros_like(p, torch::MemoryFormat::Preserve));
        found = state_.emplace(key, std::move(state)).first;
      }
      auto& state = static_cast<torch::optim::AdamWParamState&>(*found->second);
      state.step(state.step() + 1);
      const auto [beta1, beta2] = options.betas();
      const double bias_correction1 = 1 - std::pow(beta1, double(state.step()));
      const double bias_correction2 = 1 - std::pow(beta2, double(state.step()));
      AdamWConstants c;
      c.decay = options.weight_decay() != 0 ? float(1 - options.lr() * options.weight_decay()) : 1;
      c.beta1 = float(beta1), c.one_minus_beta1 = float(1 - beta1);
      c.beta2 = float(beta2), c.one_minus_beta2 = float(1 - beta2);
      c.sqrt_bias_correction2 = float(std::sqrt(bias_correction2));
      c.eps = float(options.eps());
      c.neg_step_size = float(-(options.lr() / bias_correction1));
      items.push_back({p.data_ptr<float>(), state.exp_avg().data_ptr<float>(),
                       state.exp_avg_sq().data_ptr<float>(), p.grad().data_ptr<float>(), c});
      numels.push_back(p.numel());
    }
  }
  for_each_chunk(numels, [&](size_t i, int64_t begin, int64_t length) {
    const Item& it = items[i];
    adamw_update(it.p + begin, it.g + begin, it.m + begin, it.v + begin, length, it.c);
  });
  return loss;
}

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
    return std::make_unique<FusedAdamW>(make_groups(groups, options), options);
  }
  throw std::invalid_argument("config key 'optim.name' = '" + config.name +
                              "': expected adam or adamw");
}

double clip_grad_norm(const std::vector<torch::Tensor>& parameters, double max_norm) {
  std::vector<float*> grads;
  std::vector<int64_t> numels;
  for (const auto& p : parameters) {
    const auto& g = p.grad();
    if (!g.defined()) continue;
    if (!dense_cpu_fp32(g, p)) return torch::nn::utils::clip_grad_norm_(parameters, max_norm);
    grads.push_back(g.data_ptr<float>());
    numels.push_back(g.numel());
  }
  std::vector<std::vector<double>> squares(grads.size());  // per tensor, per chunk
  for (size_t i = 0; i < grads.size(); ++i)
    squares[i].resize(size_t((numels[i] + kChunk - 1) / kChunk));
  for_each_chunk(numels, [&](size_t i, int64_t begin, int64_t length) {
    squares[i][size_t(begin / kChunk)] = nn::vec::dot(grads[i] + begin, grads[i] + begin, length);
  });
  double sum = 0.0;  // in a fixed order: the same total at any thread count
  for (const auto& tensor : squares)
    for (const double s : tensor) sum += s;
  const double norm = std::sqrt(sum);
  const double coefficient = max_norm / (norm + 1e-6);  // LibTorch's
  if (coefficient < 1.0) {
    const auto scale = float(coefficient);
    for_each_chunk(numels, [&](size_t i, int64_t begin, int64_t length) {
      float* data = grads[i] + begin;
      for (int64_t j = 0; j < length; ++j) data[j] *= scale;
    });
  }
  return norm;
}

const torch::optim::OptimizerParamState* parameter_state(const torch::optim::Optimizer& optimizer,
                                                         const torch::Tensor& p) {
  const auto& state = optimizer.state();
  const auto found = state.find(state_key(state, p));
  return found == state.end() ? nullptr : found->second.get();
}

void set_parameter_state(torch::optim::Optimizer& optimizer, const torch::Tensor& p,
                         std::unique_ptr<torch::optim::OptimizerParamState> state) {
  auto& states = optimizer.state();
  states[state_key(states, p)] = std::move(state);
}

void set_learning_rate(torch::optim::Optimizer& optimizer, double lr) {
  for (auto& group : optimizer.param_groups()) group.options().set_lr(lr);
}

}  // namespace data2vec::train
