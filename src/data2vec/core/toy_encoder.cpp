#include "data2vec/core/toy_encoder.h"

#include "data2vec/core/masking.h"

namespace data2vec {

ToyEncoderImpl::ToyEncoderImpl(const ToyEncoderOptions& options) : options_(options) {
  const auto d = options.dim();
  embed = register_module("embed", torch::nn::Linear(options.input_dim(), d));
  mask_token = register_parameter("mask_token", torch::randn({d}) * 0.02);
  position_embeddings =
      register_parameter("position_embeddings", torch::randn({options.max_len(), d}) * 0.02);
  auto layer_list = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < options.depth(); ++i) {
    layers.push_back(nn::PreNormBlock(nn::BlockOptions(d, options.num_heads(), options.mlp_dim())));
    layer_list->push_back(layers.back());
  }
  final_norm =
      register_module("final_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({d})));
}

MaskedInput ToyEncoderImpl::apply_mask(const EncoderInput& input, at::Generator& generator) {
  const auto b = input.source.size(0), t = input.source.size(1);
  auto mask = random_mask(b, t, options_.mask_ratio(), input.padding_mask, generator);
  return {input, mask.to(input.source.device())};
}

EncoderOutput ToyEncoderImpl::extract_features(const EncoderInput& input,
                                               const torch::Tensor& mask) {
  const auto t = input.source.size(1);
  TORCH_CHECK(t <= options_.max_len(), "toy encoder: sequence of ", t, " steps > max_len ",
              options_.max_len());
  EncoderOutput out;
  out.padding_mask = input.padding_mask;
  out.local_features = embed(input.source);  // [B,T,D]
  auto x = out.local_features;
  if (mask.defined()) {
    x = torch::where(mask.unsqueeze(-1), mask_token.to(x.scalar_type()).view({1, 1, -1}), x);
  }
  x = x + position_embeddings.slice(0, 0, t).unsqueeze(0);
  for (auto& layer : layers) {
    auto block = layer->forward(x, /*attention_bias=*/{}, input.padding_mask);
    x = block.x;
    out.layer_results.push_back(options_.layer_result() == LayerResultKind::kFfn ? block.ffn
                                                                                 : block.x);
  }
  out.x = final_norm(x);
  return out;
}

torch::Tensor ToyEncoderImpl::v2_mask(const EncoderInput& input, int64_t clones,
                                      at::Generator& generator) {
  const auto b = input.source.size(0), t = input.source.size(1);
  const auto padding = input.padding_mask.defined()
                           ? input.padding_mask.cpu().repeat_interleave(clones, 0)
                           : torch::Tensor();  // [B*M,T]
  const auto mask =
      random_mask_same_count(b * clones, t, options_.mask_ratio(), padding, generator);
  return mask.to(input.source.device());
}

EncoderOutput ToyEncoderImpl::extract_kept_features(const EncoderInput& input,
                                                    const torch::Tensor& ids_keep, int64_t clones) {
  const auto t = input.source.size(1);
  TORCH_CHECK(t <= options_.max_len(), "toy encoder: sequence of ", t, " steps > max_len ",
              options_.max_len());
  EncoderOutput out;
  out.local_features = embed(input.source);  // [B,T,D]
  // Positions before the gather: a kept step keeps its place in the sequence.
  auto x = out.local_features + position_embeddings.slice(0, 0, t).unsqueeze(0);
  x = gather_copies(x, ids_keep, clones);  // [B*M,Tk,D]
  if (input.padding_mask.defined()) {
    out.padding_mask = gather_copies(input.padding_mask, ids_keep, clones);  // [B*M,Tk]
  }
  for (auto& layer : layers) x = layer->forward(x, /*attention_bias=*/{}, out.padding_mask).x;
  out.x = final_norm(x);
  return out;
}

}  // namespace data2vec
