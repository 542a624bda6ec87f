#include "data2vec/nn/transformer.h"

#include <ATen/autocast_mode.h>

#include <cmath>
#include <limits>

#include "data2vec/nn/attention.h"
#include "data2vec/nn/gelu.h"
#include "data2vec/nn/layer_norm.h"
#include "data2vec/nn/vec_math.h"

namespace data2vec::nn {

SelfAttentionImpl::SelfAttentionImpl(const AttentionOptions& options_) : options(options_) {
  TORCH_CHECK(options.dim() % options.num_heads() == 0, "attention: width ", options.dim(),
              " does not divide into ", options.num_heads(), " heads");
  const auto d = options.dim();
  query = register_module("query", torch::nn::Linear(d, d));
  key = register_module("key",
                        torch::nn::Linear(torch::nn::LinearOptions(d, d).bias(options.key_bias())));
  value = register_module("value", torch::nn::Linear(d, d));
  output = register_module("output", torch::nn::Linear(d, d));
  switch (options.kernel()) {
    case AttentionKernel::kPlain: forward_ = &SelfAttentionImpl::forward_plain; break;
    case AttentionKernel::kFused: forward_ = &SelfAttentionImpl::forward_fused; break;
    case AttentionKernel::kBlocked:
    case AttentionKernel::kAuto: forward_ = &SelfAttentionImpl::forward_blocked; break;
  }
}

namespace {

// The additive logit mask [B or 1,H or 1,T,T] in `dtype` (the logits'): the relative position
// bias and, on padded keys, the dtype's lowest finite value (not -inf: a fully padded row then
// gives a uniform softmax instead of NaN, which would spread to every gradient of the step).
torch::Tensor logit_mask(const torch::Tensor& bias, const torch::Tensor& key_padding_mask,
                         int64_t b, int64_t t, const torch::TensorOptions& options) {
  if (!key_padding_mask.defined()) return bias;
  const auto dtype = options.dtype().toScalarType();
  const double lowest = dtype == torch::kBFloat16
                            ? double(std::numeric_limits<c10::BFloat16>::lowest())
                        : dtype == torch::kHalf ? double(std::numeric_limits<c10::Half>::lowest())
                                                : double(std::numeric_limits<float>::lowest());
  const auto pad =
      torch::zeros({b, 1, 1, t}, options).masked_fill(key_padding_mask.view({b, 1, 1, t}), lowest);
  return bias.defined() ? bias.to(dtype) + pad : pad;
}

#if TORCH_VERSION_MAJOR >= 2
// scaled_dot_product_attention's attn_mask in the query's dtype. No mask is an empty optional:
// LibTorch 2.6 rejects an undefined tensor there.
c10::optional<torch::Tensor> sdpa_mask(const torch::Tensor& logit_bias, const torch::Tensor& q) {
  if (!logit_bias.defined()) return c10::nullopt;
  return logit_bias.to(q.scalar_type());
}
#endif

}  // namespace

torch::Tensor SelfAttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& bias,
                                         const torch::Tensor& key_padding_mask) {
  if (!key_padding_mask.defined()) return (this->*forward_)(x, bias, key_padding_mask);
  // An example whose every key is padding attends to all of them instead: masking them all
  // leaves nothing to normalise over, and kernels part ways there (LibTorch 2.6's
  // scaled_dot_product_attention back-propagates such a row as if each probability were 1).
  return (this->*forward_)(x, bias, key_padding_mask & ~key_padding_mask.all(1, true));
}

torch::Tensor SelfAttentionImpl::forward_plain(const torch::Tensor& x, const torch::Tensor& bias,
                                               const torch::Tensor& key_padding_mask) {
  const auto b = x.size(0), t = x.size(1), h = options.num_heads(), dh = options.dim() / h;
  auto split_heads = [&](const torch::Tensor& y) {  // [B,T,D] -> [B,H,T,Dh]
    return y.view({b, t, h, dh}).transpose(1, 2);
  };
  const auto q = split_heads(query(x));
  const auto k = split_heads(key(x));
  const auto v = split_heads(value(x));
  const auto logit_bias = logit_mask(bias, key_padding_mask, b, t, q.options());
  torch::Tensor context;  // [B,H,T,Dh]
#if TORCH_VERSION_MAJOR >= 2
  const double p = is_training() ? options.attention_dropout() : 0.0;
  context = at::scaled_dot_product_attention(q, k, v, sdpa_mask(logit_bias, q), p);
#else
  auto logits = torch::matmul(q, k.transpose(-2, -1)) * (1.0 / std::sqrt(double(dh)));  // [B,H,T,T]
  if (logit_bias.defined()) logits = logits + logit_bias.to(logits.scalar_type());
  auto probs = torch::softmax(logits, -1);
  probs = torch::dropout(probs, options.attention_dropout(), is_training());
  context = torch::matmul(probs, v);
#endif
  return output(context.transpose(1, 2).reshape({b, t, h * dh}));
}

torch::Tensor SelfAttentionImpl::fused_qkv(const torch::Tensor& x, double scale) {
  // One GEMM for q, k and v. The parameters stay separate (checkpoint names); their
  // concatenation is a [3D,D] copy per forward, small next to the activations. The softmax
  // scale rides on the query weights instead of a pass over the [B,H,T,T] logits.
  const auto k_bias = key->bias.defined() ? key->bias : torch::zeros_like(query->bias);
  const auto weight = torch::cat({query->weight * scale, key->weight, value->weight});  // [3D,D]
  const auto bias = torch::cat({query->bias * scale, k_bias, value->bias});             // [3D]
  return linear(x, weight, bias, options.gemm());                                       // [B,T,3D]
}

torch::Tensor SelfAttentionImpl::forward_blocked(const torch::Tensor& x,
                                                 const torch::Tensor& attn_bias,
                                                 const torch::Tensor& key_padding_mask) {
  // The kernel is CPU fp32; on another device, another dtype or under autocast (bf16 linears)
  // the fused path, the same math, takes the call.
  if (!x.device().is_cpu() || x.scalar_type() != torch::kFloat32 || cpu_autocast_enabled())
    return forward_fused(x, attn_bias, key_padding_mask);
  const auto dh = options.dim() / options.num_heads();
  const auto qkv = fused_qkv(x, 1.0 / std::sqrt(double(dh)));  // [B,T,3D]
  const double p = is_training() ? options.attention_dropout() : 0.0;
  return project_out(
      blocked_attention(qkv, options.num_heads(), attn_bias, key_padding_mask, p, options.gemm()));
}

torch::Tensor SelfAttentionImpl::forward_fused(const torch::Tensor& x,
                                               const torch::Tensor& attn_bias,
                                               const torch::Tensor& key_padding_mask) {
  const auto b = x.size(0), t = x.size(1), h = options.num_heads(), d = options.dim(), dh = d / h;
#if TORCH_VERSION_MAJOR >= 2
  const double scale = 1.0;  // scaled_dot_product_attention scales
#else
  const double scale = 1.0 / std::sqrt(double(dh));
#endif
  const auto qkv = fused_qkv(x, scale)  // [B,T,3D]
                       .view({b, t, 3, h, dh})
                       .permute({2, 0, 3, 1, 4})
                       .contiguous()  // [3,B,H,T,Dh]: one copy into the heads layout
                       .view({3, b * h, t, dh})
                       .unbind(0);  // backward: one stack (select would zero-fill 3 copies)
  const auto &q = qkv[0], &k = qkv[1], &v = qkv[2];  // [B*H,T,Dh] each
  const auto logit_bias = logit_mask(attn_bias, key_padding_mask, b, t, q.options());
#if TORCH_VERSION_MAJOR >= 2
  const double p = is_training() ? options.attention_dropout() : 0.0;
  auto context = at::scaled_dot_product_attention(
                     q.view({b, h, t, dh}), k.view({b, h, t, dh}), v.view({b, h, t, dh}),
                     sdpa_mask(logit_bias, q), p)
                     .view({b * h, t, dh});
#else
  auto logits = batched_matmul(q, k.transpose(1, 2), options.gemm()).view({b, h, t, t});  // scaled
  // Out of place: an in-place add on this view costs more in autograd's view bookkeeping
  // (CopySlices, as_strided backward) than the allocation it saves.
  if (logit_bias.defined()) logits = logits + logit_bias.to(logits.scalar_type());
  auto probs = torch::softmax(logits, -1);
  probs = torch::dropout(probs, options.attention_dropout(), is_training());
  auto context = batched_matmul(probs.view({b * h, t, t}), v, options.gemm());  // [B*H,T,Dh]
#endif
  return project_out(context.view({b, h, t, dh}).transpose(1, 2).reshape({b, t, d}));
}

torch::Tensor SelfAttentionImpl::project_out(const torch::Tensor& context) {
  return linear(context, output->weight, output->bias, options.gemm());
}

FeedForwardImpl::FeedForwardImpl(const FeedForwardOptions& options)
    : fast_gelu_(options.fast_gelu()), gemm_(options.gemm()) {
  fc1 = register_module("fc1", torch::nn::Linear(options.dim(), options.hidden_dim()));
  fc2 = register_module("fc2", torch::nn::Linear(options.hidden_dim(), options.dim()));
  activation_dropout =
      register_module("activation_dropout", torch::nn::Dropout(options.activation_dropout()));
}

torch::Tensor FeedForwardImpl::forward(const torch::Tensor& x) {
  const auto activated =  // [B,T,F]
      fast_gelu_ ? gelu_erf(linear(x, fc1->weight, fc1->bias, gemm_))
                 : linear(x, fc1->weight, fc1->bias, gemm_, Activation::kGelu);
  return linear(activation_dropout(activated), fc2->weight, fc2->bias, gemm_);
}

namespace {

SelfAttention make_attention(const BlockOptions& o) {
  return SelfAttention(AttentionOptions(o.dim(), o.num_heads())
                           .key_bias(o.key_bias())
                           .attention_dropout(o.attention_dropout())
                           .kernel(o.fast_paths() ? o.attention_kernel() : AttentionKernel::kPlain)
                           .gemm(o.fast_paths() ? o.gemm() : GemmLibrary::kTorch));
}

FeedForward make_feed_forward(const BlockOptions& o) {
  return FeedForward(FeedForwardOptions(o.dim(), o.mlp_dim())
                         .activation_dropout(o.activation_dropout())
                         .fast_gelu(o.fast_paths() && o.fast_gelu())
                         .gemm(o.fast_paths() ? o.gemm() : GemmLibrary::kTorch));
}

torch::nn::LayerNorm make_layer_norm(const BlockOptions& o) {
  return torch::nn::LayerNorm(torch::nn::LayerNormOptions({o.dim()}).eps(o.layer_norm_eps()));
}

// The module's norm, through nn::layer_norm on the fast paths.
torch::Tensor normalise(torch::nn::LayerNorm& norm, const torch::Tensor& x, bool fast) {
  return fast ? layer_norm(x, norm) : norm(x);
}

}  // namespace

namespace {

// One row of ScaledResidualFunction's backward: dy = g scale, and g y added into dscale.
DATA2VEC_VECTOR_CLONES
void scaled_residual_backward_row(const float* g, const float* y, const float* scale, float* dy,
                                  float* dscale, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    dy[j] = g[j] * scale[j];
    dscale[j] += g[j] * y[j];
  }
}

// x + y * scale (x, y [..., D] contiguous, scale [D], CPU fp32) as torch::addcmul computes it,
// with a backward that forms dy and dscale in one pass: LibTorch's addcmul backward multiplies
// twice and reduces [B,T,D] to [D] in a separate sum (0.2 ms at [3152,192], 2 threads, where
// this pass takes 0.05).
class ScaledResidualFunction : public torch::autograd::Function<ScaledResidualFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& y, const torch::Tensor& scale) {
    ctx->save_for_backward({y, scale});
    return torch::addcmul(x, y, scale);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto &y = saved[0], &scale = saved[1];
    const auto g = grads[0].contiguous();
    const auto cols = scale.numel(), rows = g.numel() / cols;
    auto dy = torch::empty_like(y);
    auto dscale = torch::zeros_like(scale);
    const float *gp = g.data_ptr<float>(), *yp = y.data_ptr<float>(),
                *sp = scale.data_ptr<float>();
    float* dyp = dy.data_ptr<float>();
    vec::sum_rows_in_chunks(rows, cols, dscale.data_ptr<float>(),
                            [&](int64_t first, int64_t last, float* sums) {
                              for (int64_t r = first; r < last; ++r)
                                scaled_residual_backward_row(gp + r * cols, yp + r * cols, sp,
                                                             dyp + r * cols, sums, cols);
                            });
    return {ctx->needs_input_grad(0) ? grads[0] : torch::Tensor(),
            ctx->needs_input_grad(1) ? dy : torch::Tensor(),
            ctx->needs_input_grad(2) ? dscale : torch::Tensor()};
  }
};

// x + y * scale: ScaledResidualFunction where it applies, torch::addcmul elsewhere (also where
// no graph is built: the teacher, extraction).
torch::Tensor scaled_residual(const torch::Tensor& x, const torch::Tensor& y,
                              const torch::Tensor& scale) {
  const auto fp32_cpu = [](const torch::Tensor& t) {
    return t.device().is_cpu() && t.scalar_type() == torch::kFloat32 && t.is_contiguous();
  };
  const bool applies = torch::GradMode::is_enabled() && fp32_cpu(x) && fp32_cpu(y) &&
                       fp32_cpu(scale) && x.sizes() == y.sizes() && scale.dim() == 1 &&
                       x.dim() >= 1 && x.size(-1) == scale.size(0) && x.numel() > 0;
  return applies ? ScaledResidualFunction::apply(x, y, scale) : torch::addcmul(x, y, scale);
}

}  // namespace

PreNormBlockImpl::PreNormBlockImpl(const BlockOptions& options) {
  layernorm_before = register_module("layernorm_before", make_layer_norm(options));
  attention = register_module("attention", make_attention(options));
  layernorm_after = register_module("layernorm_after", make_layer_norm(options));
  feed_forward = register_module("feed_forward", make_feed_forward(options));
  dropout = register_module("dropout", torch::nn::Dropout(options.dropout()));
  if (options.layer_scale_init() > 0) {
    lambda_1 =
        register_parameter("lambda_1", torch::full({options.dim()}, options.layer_scale_init()));
    lambda_2 =
        register_parameter("lambda_2", torch::full({options.dim()}, options.layer_scale_init()));
  }
  fused_residual_ = options.fast_paths() && lambda_1.defined() && options.dropout() == 0.0;
  fast_norm_ = options.fast_paths();
}

BlockOutput PreNormBlockImpl::forward(const torch::Tensor& x, const torch::Tensor& attention_bias,
                                      const torch::Tensor& key_padding_mask) {
  auto attn = attention(normalise(layernorm_before, x, fast_norm_), attention_bias,
                        key_padding_mask);  // [B,T,D]
  if (fused_residual_) {  // x + attn * lambda_1, one pass (dropout is off)
    const auto h = scaled_residual(x, attn, lambda_1);
    auto ffn = feed_forward(normalise(layernorm_after, h, fast_norm_));  // [B,T,D]
    return {scaled_residual(h, ffn, lambda_2), ffn};
  }
  if (lambda_1.defined()) attn = attn * lambda_1;
  auto h = x + dropout(attn);
  auto ffn = feed_forward(normalise(layernorm_after, h, fast_norm_));  // [B,T,D]
  auto scaled = lambda_2.defined() ? ffn * lambda_2 : ffn;
  return {h + dropout(scaled), ffn};
}

PostNormBlockImpl::PostNormBlockImpl(const BlockOptions& options) {
  attention = register_module("attention", make_attention(options));
  attention_layer_norm = register_module("layer_norm", make_layer_norm(options));
  feed_forward = register_module("feed_forward", make_feed_forward(options));
  final_layer_norm = register_module("final_layer_norm", make_layer_norm(options));
  dropout = register_module("dropout", torch::nn::Dropout(options.dropout()));
  fast_norm_ = options.fast_paths();
}

BlockOutput PostNormBlockImpl::forward(const torch::Tensor& x, const torch::Tensor& attention_bias,
                                       const torch::Tensor& key_padding_mask) {
  auto h = normalise(attention_layer_norm,
                     x + dropout(attention(x, attention_bias, key_padding_mask)), fast_norm_);
  auto ffn = feed_forward(h);  // [B,T,D]
  return {normalise(final_layer_norm, h + dropout(ffn), fast_norm_), ffn};
}

}  // namespace data2vec::nn
