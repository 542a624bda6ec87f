#include "data2vec/nn/transformer.h"

#include <cmath>
#include <limits>

namespace data2vec::nn {

SelfAttentionImpl::SelfAttentionImpl(const AttentionOptions& options_) : options(options_) {
  TORCH_CHECK(options.dim() % options.num_heads() == 0, "attention: width ", options.dim(),
              " does not divide into ", options.num_heads(), " heads");
  const auto d = options.dim();
  query = register_module("query", torch::nn::Linear(d, d));
  key = register_module("key", torch::nn::Linear(torch::nn::LinearOptions(d, d).bias(options.key_bias())));
  value = register_module("value", torch::nn::Linear(d, d));
  output = register_module("output", torch::nn::Linear(d, d));
}

torch::Tensor SelfAttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& bias,
                                         const torch::Tensor& key_padding_mask) {
  const auto b = x.size(0), t = x.size(1), h = options.num_heads(), dh = options.dim() / h;
  auto split_heads = [&](const torch::Tensor& y) {  // [B,T,D] -> [B,H,T,Dh]
    return y.view({b, t, h, dh}).transpose(1, 2);
  };
  const auto q = split_heads(query(x));
  const auto k = split_heads(key(x));
  const auto v = split_heads(value(x));
  // Additive logit mask [B or 1,H or 1,T,T]: relative position bias and -inf on padded keys.
  torch::Tensor logit_bias = bias;
  if (key_padding_mask.defined()) {
    // The dtype's lowest finite value, not -inf: a fully padded row then gives a uniform
    // softmax instead of NaN, which would spread to every gradient of the step.
    const double lowest = q.scalar_type() == torch::kBFloat16
                              ? double(std::numeric_limits<c10::BFloat16>::lowest())
                          : q.scalar_type() == torch::kHalf
                              ? double(std::numeric_limits<c10::Half>::lowest())
                              : double(std::numeric_limits<float>::lowest());
    const auto pad = torch::zeros({b, 1, 1, t}, q.options())
                         .masked_fill(key_padding_mask.view({b, 1, 1, t}), lowest);
    logit_bias = logit_bias.defined() ? logit_bias.to(q.scalar_type()) + pad : pad;
  }
  torch::Tensor context;  // [B,H,T,Dh]
#if TORCH_VERSION_MAJOR >= 2
  const double p = is_training() ? options.attention_dropout() : 0.0;
  context = at::scaled_dot_product_attention(
      q, k, v, logit_bias.defined() ? logit_bias.to(q.scalar_type()) : logit_bias, p);
#else
  auto logits = torch::matmul(q, k.transpose(-2, -1)) * (1.0 / std::sqrt(double(dh)));  // [B,H,T,T]
  if (logit_bias.defined()) logits = logits + logit_bias.to(logits.scalar_type());
  auto probs = torch::softmax(logits, -1);
  probs = torch::dropout(probs, options.attention_dropout(), is_training());
  context = torch::matmul(probs, v);
#endif
  return output(context.transpose(1, 2).reshape({b, t, h * dh}));
}

FeedForwardImpl::FeedForwardImpl(const FeedForwardOptions& options) {
  fc1 = register_module("fc1", torch::nn::Linear(options.dim(), options.hidden_dim()));
  fc2 = register_module("fc2", torch::nn::Linear(options.hidden_dim(), options.dim()));
  activation_dropout =
      register_module("activation_dropout", torch::nn::Dropout(options.activation_dropout()));
}

torch::Tensor FeedForwardImpl::forward(const torch::Tensor& x) {
  return fc2(activation_dropout(torch::gelu(fc1(x))));
}

namespace {

SelfAttention make_attention(const BlockOptions& o) {
  return SelfAttention(AttentionOptions(o.dim(), o.num_heads())
                           .key_bias(o.key_bias())
                           .attention_dropout(o.attention_dropout()));
}

FeedForward make_feed_forward(const BlockOptions& o) {
  return FeedForward(
      FeedForwardOptions(o.dim(), o.mlp_dim()).activation_dropout(o.activation_dropout()));
}

torch::nn::LayerNorm make_layer_norm(const BlockOptions& o) {
  return torch::nn::LayerNorm(torch::nn::LayerNormOptions({o.dim()}).eps(o.layer_norm_eps()));
}

}  // namespace

PreNormBlockImpl::PreNormBlockImpl(const BlockOptions& options) {
  layernorm_before = register_module("layernorm_before", make_layer_norm(options));
  attention = register_module("attention", make_attention(options));
  layernorm_after = register_module("layernorm_after", make_layer_norm(options));
  feed_forward = register_module("feed_forward", make_feed_forward(options));
  dropout = register_module("dropout", torch::nn::Dropout(options.dropout()));
  if (options.layer_scale_init() > 0) {
    lambda_1 = register_parameter("lambda_1",
                                  torch::full({options.dim()}, options.layer_scale_init()));
    lambda_2 = register_parameter("lambda_2",
                                  torch::full({options.dim()}, options.layer_scale_init()));
  }
}

BlockOutput PreNormBlockImpl::forward(const torch::Tensor& x, const torch::Tensor& attention_bias,
                                      const torch::Tensor& key_padding_mask) {
  auto attn = attention(layernorm_before(x), attention_bias, key_padding_mask);  // [B,T,D]
  if (lambda_1.defined()) attn = attn * lambda_1;
  auto h = x + dropout(attn);
  auto ffn = feed_forward(layernorm_after(h));  // [B,T,D]
  auto scaled = lambda_2.defined() ? ffn * lambda_2 : ffn;
  return {h + dropout(scaled), ffn};
}

PostNormBlockImpl::PostNormBlockImpl(const BlockOptions& options) {
  attention = register_module("attention", make_attention(options));
  attention_layer_norm = register_module("layer_norm", make_layer_norm(options));
  feed_forward = register_module("feed_forward", make_feed_forward(options));
  final_layer_norm = register_module("final_layer_norm", make_layer_norm(options));
  dropout = register_module("dropout", torch::nn::Dropout(options.dropout()));
}

BlockOutput PostNormBlockImpl::forward(const torch::Tensor& x, const torch::Tensor& attention_bias,
                                       const torch::Tensor& key_padding_mask) {
  auto h = attention_layer_norm(x + dropout(attention(x, attention_bias, key_padding_mask)));
  auto ffn = feed_forward(h);  // [B,T,D]
  return {final_layer_norm(h + dropout(ffn)), ffn};
}

}  // namespace data2vec::nn
