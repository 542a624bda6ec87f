#include "data2vec/core/targets.h"

#include <algorithm>

#include "data2vec/nn/layer_norm.h"

namespace data2vec {

TargetNorm parse_target_norm(const std::string& name) {
  if (name == "none") return TargetNorm::kNone;
  if (name == "instance_norm") return TargetNorm::kInstance;
  if (name == "layer_norm") return TargetNorm::kLayer;
  TORCH_CHECK(false, "unknown target normalisation '", name,
              "' (expected none, instance_norm or layer_norm)");
}

std::string to_string(TargetNorm norm) {
  switch (norm) {
    case TargetNorm::kNone: return "none";
    case TargetNorm::kInstance: return "instance_norm";
    case TargetNorm::kLayer: return "layer_norm";
  }
  return "?";
}

torch::Tensor variance(const torch::Tensor& x, int64_t dim, bool unbiased) {
  const auto centered = x - x.mean(dim, /*keepdim=*/true);
  const auto count = std::max<int64_t>(x.size(dim) - (unbiased ? 1 : 0), 1);
  return (centered * centered).sum(dim, /*keepdim=*/true) / double(count);
}

torch::Tensor instance_norm_over_time(const torch::Tensor& x, const torch::Tensor& padding_mask,
                                      double eps) {
  if (!padding_mask.defined()) {
    const auto centered = x - x.mean(/*dim=*/1, /*keepdim=*/true);             // [B,T,D]
    const auto var = (centered * centered).mean(/*dim=*/1, /*keepdim=*/true);  // [B,1,D]
    return centered * torch::rsqrt(var + eps);
  }
  TORCH_CHECK(padding_mask.scalar_type() == torch::kBool, "padding_mask must be bool, got ",
              padding_mask.scalar_type());
  const auto padded = padding_mask.unsqueeze(-1);                                  // [B,T,1]
  // Padded steps may hold inf / NaN: zero them first (NaN * 0 is NaN, masked_fill is not).
  const auto x0 = x.masked_fill(padded, 0.0);                                     // [B,T,D]
  const auto real = (~padded).to(x.scalar_type());                                // [B,T,1]
  const auto count = real.sum(/*dim=*/1, /*keepdim=*/true).clamp_min(1.0);        // [B,1,1]
  const auto mean = x0.sum(1, true) / count;                                       // [B,1,D]
  const auto var = ((x0 - mean).pow(2) * real).sum(1, true) / count;               // [B,1,D]
  return ((x0 - mean) * torch::rsqrt(var + eps)).masked_fill(padded, 0.0);
}

torch::Tensor layer_norm_over_channels(const torch::Tensor& x, double eps) {
  return nn::layer_norm(x, /*weight=*/{}, /*bias=*/{}, eps);
}

namespace {

torch::Tensor normalise(const torch::Tensor& x, TargetNorm norm, const torch::Tensor& padding_mask,
                        double eps) {
  switch (norm) {
    case TargetNorm::kNone: return x;
    case TargetNorm::kInstance: return instance_norm_over_time(x, padding_mask, eps);
    case TargetNorm::kLayer: return layer_norm_over_channels(x, eps);
  }
  return x;
}

}  // namespace

torch::Tensor build_targets(const std::vector<torch::Tensor>& layer_results,
                            const torch::Tensor& padding_mask, const TargetOptions& options) {
  const auto num_layers = static_cast<int64_t>(layer_results.size());
  const int64_t k = options.top_k_layers();
  TORCH_CHECK(k >= 1 && k <= num_layers, "top_k_layers = ", k, " but the encoder has ", num_layers,
              " layers");
  torch::NoGradGuard no_grad;
  torch::Tensor sum;
  for (int64_t i = num_layers - k; i < num_layers; ++i) {
    // fp32 even when the encoder ran under bf16 autocast.
    auto layer = normalise(layer_results[i].detach().to(torch::kFloat32), options.layer_norm_targets(),
                           padding_mask, options.eps());
    sum = sum.defined() ? sum + layer : layer;
  }
  auto targets = sum / static_cast<double>(k);  // [B,T,D]
  return normalise(targets, options.final_norm(), padding_mask, options.eps());
}

}  // namespace data2vec
