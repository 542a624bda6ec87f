#include "data2vec/audio/encoder.h"

#include <map>
#include <utility>

#include "data2vec/core/masking.h"
#include "data2vec/nn/gelu.h"
#include "data2vec/nn/layer_norm.h"

namespace data2vec::audio {

std::vector<ConvLayerSpec> default_conv_layers(int64_t dim) {
  std::vector<ConvLayerSpec> layers{{dim, 10, 5}};
  for (int i = 0; i < 4; ++i) layers.push_back({dim, 3, 2});
  for (int i = 0; i < 2; ++i) layers.push_back({dim, 2, 2});
  return layers;
}

int64_t conv_output_length(int64_t samples, const std::vector<ConvLayerSpec>& layers) {
  int64_t length = samples;
  for (const auto& layer : layers) {
    if (length < layer.kernel) return 0;
    length = (length - layer.kernel) / layer.stride + 1;
  }
  return length;
}

int64_t conv_receptive_field(const std::vector<ConvLayerSpec>& layers) {
  int64_t field = 1;
  for (auto it = layers.rbegin(); it != layers.rend(); ++it) {
    field = (field - 1) * it->stride + it->kernel;
  }
  return field;
}

AudioEncoderOptions audio_preset(const std::string& name) {
  struct Size {
    int64_t depth, dim, mlp_dim, heads, conv_dim;
  };
  // clang-format off
  static const std::map<std::string, Size> presets{
      {"mini", {4, 128, 512, 2, 128}},
      {"tiny", {12, 192, 768, 3, 256}},
      {"small", {12, 384, 1536, 6, 512}},
      {"base", {12, 768, 3072, 12, 512}},
      {"large", {24, 1024, 4096, 16, 512}},
  };
  // clang-format on
  const auto it = presets.find(name);
  TORCH_CHECK(it != presets.end(), "unknown audio preset '", name,
              "' (expected mini, tiny, small, base or large)");
  const Size& s = it->second;
  return AudioEncoderOptions()
      .conv_layers(default_conv_layers(s.conv_dim))
      .dim(s.dim)
      .depth(s.depth)
      .num_heads(s.heads)
      .mlp_dim(s.mlp_dim);
}

std::string hf_audio_name(const std::string& name) {
  static const std::vector<std::pair<std::string, std::string>> renames{
      {".attention.query.", ".attention.q_proj."},
      {".attention.key.", ".attention.k_proj."},
      {".attention.value.", ".attention.v_proj."},
      {".attention.output.", ".attention.out_proj."},
      {".feed_forward.fc1.", ".feed_forward.intermediate_dense."},
      {".feed_forward.fc2.", ".feed_forward.output_dense."},
  };
  std::string out = name;
  for (const auto& [ours, theirs] : renames) {
    const auto at = out.find(ours);
    if (at != std::string::npos) out.replace(at, ours.size(), theirs);
  }
  return out;
}

// ---- local encoder ----

ConvLayerImpl::ConvLayerImpl(int64_t in_dim, const ConvLayerSpec& spec, bool bias,
                             bool channels_last)
    : stride_(spec.stride), channels_last_(channels_last) {
  conv = register_module(
      "conv",
      torch::nn::Conv1d(
          torch::nn::Conv1dOptions(in_dim, spec.dim, spec.kernel).stride(spec.stride).bias(bias)));
  torch::nn::init::kaiming_normal_(conv->weight);
  layer_norm = register_module(
      "layer_norm",
      torch::nn::LayerNorm(torch::nn::LayerNormOptions({spec.dim}).eps(kConvLayerNormEps)));
}

namespace {

// oneDNN's convolution backward runs 3-4x slower on a few long sequences than on many short ones
// holding the same samples (a 256-channel layer of 20 s clips at batch 1: 726 against 226 ms at
// 2 s x 10). A batch of fewer than kChunkBatch sequences is therefore convolved as windows of
// kChunkOutputs outputs each (overlapping by kernel - stride samples) stacked along the batch,
// plus the tail: every output is the same product over the same samples. Not at 8 or more: at
// any batch size it sped a 5 s b8 step by 12-15% but slowed the 2 s b12 speech 2.0 pretraining
// by 10-19% (BENCHMARKS.md, 2026-12-03).
constexpr int64_t kChunkOutputs = 512;
constexpr int64_t kChunkBatch = 8;

// x [B,S,Cin] -> [B,S',Cout], as Conv2d on the channels-last [B,Cin,1,S] view.
torch::Tensor conv_channels_last(const torch::Tensor& x, const torch::Tensor& weight,
                                 const torch::Tensor& bias, int64_t stride) {
  const auto conv = [&](const torch::Tensor& seq) {
    const auto image = seq.unsqueeze(1).permute({0, 3, 1, 2});  // [N,Cin,1,S], channels last
    return torch::conv2d(image, weight.unsqueeze(2), bias, /*stride=*/{1, stride})
        .permute({0, 2, 3, 1})
        .squeeze(1);
  };
  const int64_t b = x.size(0), s = x.size(1), c = x.size(2), k = weight.size(2);
  const int64_t outputs = (s - k) / stride + 1;
  const int64_t chunks = outputs / kChunkOutputs;
  if (b >= kChunkBatch || chunks < 2) return conv(x);
  const int64_t window = (kChunkOutputs - 1) * stride + k;
  const auto windows = x.unfold(1, window, kChunkOutputs * stride)  // [B,>=chunks,Cin,window]
                           .narrow(1, 0, chunks)
                           .permute({0, 1, 3, 2})
                           .reshape({b * chunks, window, c});
  const auto head = conv(windows).reshape({b, chunks * kChunkOutputs, -1});
  const int64_t done = chunks * kChunkOutputs;
  if (done == outputs) return head;
  return torch::cat({head, conv(x.narrow(1, done * stride, s - done * stride))}, 1);
}

}  // namespace

torch::Tensor ConvLayerImpl::forward(const torch::Tensor& x) {
  if (!channels_last_) {
    auto y = conv(x.transpose(1, 2));  // [B,Cout,S']
    return nn::gelu(nn::layer_norm(y.transpose(1, 2), layer_norm));
  }
  return nn::gelu(
      nn::layer_norm(conv_channels_last(x, conv->weight, conv->bias, stride_), layer_norm));
}

FeatureExtractorImpl::FeatureExtractorImpl(const std::vector<ConvLayerSpec>& layers, bool bias,
                                           bool channels_last) {
  TORCH_CHECK(!layers.empty(), "audio encoder: conv_layers is empty");
  auto list = register_module("conv_layers", torch::nn::ModuleList());
  int64_t in_dim = 1;
  for (const auto& spec : layers) {
    TORCH_CHECK(spec.dim > 0 && spec.kernel > 0 && spec.stride > 0,
                "audio encoder: bad conv layer (dim ", spec.dim, ", kernel ", spec.kernel,
                ", stride ", spec.stride, ")");
    conv_layers.push_back(ConvLayer(in_dim, spec, bias, channels_last));
    list->push_back(conv_layers.back());
    in_dim = spec.dim;
  }
}

torch::Tensor FeatureExtractorImpl::forward(const torch::Tensor& waveform) {
  auto x = waveform.unsqueeze(-1);  // [B,S,1]
  for (auto& layer : conv_layers) x = layer->forward(x);
  return x.transpose(1, 2);  // [B,C,T]
}

FeatureProjectionImpl::FeatureProjectionImpl(int64_t in_dim, int64_t dim, double eps) {
  layer_norm = register_module(
      "layer_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({in_dim}).eps(eps)));
  projection = register_module("projection", torch::nn::Linear(in_dim, dim));
}

torch::Tensor FeatureProjectionImpl::forward(const torch::Tensor& features) {
  return projection(nn::layer_norm(features, layer_norm));
}

// ---- positional encoder ----

PositionalConvLayerImpl::PositionalConvLayerImpl(int64_t dim, int64_t kernel, int64_t groups)
    : remove_frames(kernel % 2 == 0 ? 1 : 0) {
  TORCH_CHECK(dim % groups == 0, "audio encoder: width ", dim, " does not divide into ", groups,
              " positional conv groups (set pos_conv_groups)");
  conv = register_module(
      "conv", torch::nn::Conv1d(
                  torch::nn::Conv1dOptions(dim, dim, kernel).padding(kernel / 2).groups(groups)));
}

torch::Tensor PositionalConvLayerImpl::forward(const torch::Tensor& x) {
  auto y = conv(x);  // [B,D,T + remove_frames]
  if (remove_frames > 0) y = y.slice(2, 0, y.size(2) - remove_frames);
  y = nn::layer_norm(y.transpose(1, 2), /*weight=*/{}, /*bias=*/{}, kConvLayerNormEps)
          .transpose(1, 2);
  return torch::gelu(y);
}

PositionalConvEmbeddingImpl::PositionalConvEmbeddingImpl(int64_t dim, int64_t depth, int64_t kernel,
                                                         int64_t groups) {
  TORCH_CHECK(depth >= 1, "audio encoder: pos_conv_depth must be >= 1, got ", depth);
  auto list = register_module("layers", torch::nn::ModuleList());
  for (int64_t j = 0; j < depth; ++j) {
    layers.push_back(PositionalConvLayer(dim, kernel, groups));
    list->push_back(layers.back());
  }
}

torch::Tensor PositionalConvEmbeddingImpl::forward(const torch::Tensor& x) {
  auto y = x.transpose(1, 2);  // [B,D,T]
  for (auto& layer : layers) y = layer->forward(y);
  return y.transpose(1, 2);  // [B,T,D]
}

// ---- transformer ----

namespace {

// fairseq's init_bert_params for the transformer's Linear layers: N(0, 0.02), zero bias.
void init_bert_linear(torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  for (auto& child : module.modules(/*include_self=*/true)) {
    if (auto* linear = child->as<torch::nn::Linear>()) {
      linear->weight.normal_(0.0, 0.02);
      if (linear->bias.defined()) linear->bias.zero_();
    }
  }
}

}  // namespace

AudioTransformerImpl::AudioTransformerImpl(const AudioEncoderOptions& o)
    : layerdrop_(o.layerdrop()), ffn_results_(o.layer_result() == LayerResultKind::kFfn) {
  TORCH_CHECK(o.layerdrop() >= 0.0 && o.layerdrop() < 1.0,
              "audio encoder: layerdrop must be in [0, 1), got ", o.layerdrop());
  pos_conv_embed = register_module(
      "pos_conv_embed", PositionalConvEmbedding(o.dim(), o.pos_conv_depth(), o.pos_conv_kernel(),
                                                o.pos_conv_groups()));
  layer_norm = register_module(
      "layer_norm",
      torch::nn::LayerNorm(torch::nn::LayerNormOptions({o.dim()}).eps(o.layer_norm_eps())));
  dropout = register_module("dropout", torch::nn::Dropout(o.dropout()));
  auto list = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < o.depth(); ++i) {
    layers.push_back(nn::PostNormBlock(nn::BlockOptions(o.dim(), o.num_heads(), o.mlp_dim())
                                           .layer_norm_eps(o.layer_norm_eps())
                                           .dropout(o.dropout())
                                           .attention_dropout(o.attention_dropout())
                                           .activation_dropout(o.activation_dropout())
                                           .gemm(o.gemm())));
    list->push_back(layers.back());
  }
  init_bert_linear(*list);
}

ContextOutput AudioTransformerImpl::forward(const torch::Tensor& x_in,
                                            const torch::Tensor& padding_mask) {
  // Padded frames are zeroed so the positional convolutions read zeros there, not features.
  auto x = padding_mask.defined() ? x_in.masked_fill(padding_mask.unsqueeze(-1), 0.0) : x_in;
  x = x + pos_conv_embed(x);
  x = dropout(nn::layer_norm(x, layer_norm));
  ContextOutput out;
  out.block_input = x;
  out.layer_results.reserve(layers.size());
  const bool may_drop = is_training() && layerdrop_ > 0.0;
  for (auto& layer : layers) {
    if (may_drop && torch::rand({1}).item<double>() < layerdrop_) {
      out.layer_results.push_back(ffn_results_ ? torch::zeros_like(x) : x);
      continue;
    }
    auto block = layer->forward(x, /*attention_bias=*/{}, padding_mask);
    x = block.x;
    out.layer_results.push_back(ffn_results_ ? block.ffn : block.x);
  }
  out.x = x;
  return out;
}

ContextOutput AudioTransformerImpl::forward_kept(const torch::Tensor& x_in,
                                                 const torch::Tensor& padding_mask,
                                                 const torch::Tensor& ids_keep, int64_t clones) {
  // The positional convolution reaches +-(kernel / 2) x depth frames, far past a masked block:
  // run over the unmasked sequence it would hand every kept frame a learned function of the
  // frames it must predict. fairseq (data2vec2 modalities/base.py, encoder_zero_mask) runs it on
  // each copy with that copy's masked frames zeroed, as padding is, and keeps only the unmasked
  // frames afterwards.
  const auto rows = ids_keep.size(0), frames = x_in.size(1);
  auto visible = torch::zeros({rows, frames}, ids_keep.options().dtype(torch::kBool))
                     .scatter_(1, ids_keep, true);  // [B*M,T]: the copy's kept frames
  if (padding_mask.defined()) visible &= ~padding_mask.repeat_interleave(clones, 0);
  const auto copies =
      x_in.repeat_interleave(clones, 0).masked_fill(~visible.unsqueeze(-1), 0.0);  // [B*M,T,D]
  auto x = gather_positions(copies + pos_conv_embed(copies), ids_keep);            // [B*M,Tk,D]
  x = dropout(nn::layer_norm(x, layer_norm));
  const auto kept_padding = padding_mask.defined() ? gather_copies(padding_mask, ids_keep, clones)
                                                   : torch::Tensor();  // [B*M,Tk]
  ContextOutput out;
  const bool may_drop = is_training() && layerdrop_ > 0.0;
  for (auto& layer : layers) {
    if (may_drop && torch::rand({1}).item<double>() < layerdrop_) continue;
    x = layer->forward(x, /*attention_bias=*/{}, kept_padding).x;
  }
  out.x = x;
  return out;
}

// ---- the encoder ----

AudioEncoderImpl::AudioEncoderImpl(const AudioEncoderOptions& options) : options_(options) {
  TORCH_CHECK(options.dim() % options.num_heads() == 0, "audio encoder: width ", options.dim(),
              " does not divide into ", options.num_heads(), " heads");
  const double eps = options.layer_norm_eps();
  feature_extractor = register_module(
      "feature_extractor",
      FeatureExtractor(options.conv_layers(), options.conv_bias(), options.conv_channels_last()));
  feature_projection =
      register_module("feature_projection",
                      FeatureProjection(options.conv_layers().back().dim, options.dim(), eps));
  feature_dropout =
      register_module("feature_dropout", torch::nn::Dropout(options.feature_dropout()));
  masked_spec_embed = register_parameter("masked_spec_embed", torch::rand({options.dim()}));
  encoder = register_module("encoder", AudioTransformer(options));
}

std::vector<std::string> AudioEncoderImpl::ema_copied_prefixes() const {
  // The teacher only runs `encoder` minus its pos conv (fairseq ema_layers_only); everything
  // else is copied so the teacher's checkpoint stays a complete, consistent encoder.
  return {"feature_extractor.", "feature_projection.", "masked_spec_embed",
          "encoder.pos_conv_embed."};
}

int64_t AudioEncoderImpl::num_frames(int64_t samples) const {
  return conv_output_length(samples, options_.conv_layers());
}

torch::Tensor AudioEncoderImpl::frame_lengths(const torch::Tensor& sample_lengths) const {
  auto length = sample_lengths.to(torch::kLong);
  for (const auto& layer : options_.conv_layers()) {
    length = (torch::div(length - layer.kernel, layer.stride, "floor") + 1).clamp_min(0);
  }
  return length;
}

torch::Tensor AudioEncoderImpl::frame_padding_mask(const torch::Tensor& sample_padding_mask,
                                                   int64_t frames) const {
  if (!sample_padding_mask.defined()) return {};
  const auto real_samples = (~sample_padding_mask).sum(/*dim=*/1);           // [B]
  const auto lengths = frame_lengths(real_samples);                          // [B]
  const auto steps = torch::arange(frames, lengths.options()).unsqueeze(0);  // [1,T]
  return steps >= lengths.unsqueeze(1);                                      // [B,T]
}

namespace {

// What the mask samplers read: frames T of the batch and the real frames of each example, [B]
// int64 on the CPU, from the waveforms' sample padding.
std::pair<int64_t, torch::Tensor> frames_and_lengths(const AudioEncoderImpl& encoder,
                                                     const EncoderInput& input) {
  TORCH_CHECK(input.source.dim() == 2, "audio encoder: expected waveforms [B,S], got shape ",
              input.source.sizes());
  const int64_t frames = encoder.num_frames(input.source.size(1));
  if (!input.padding_mask.defined()) {
    return {frames, torch::full({input.source.size(0)}, frames, torch::kLong)};
  }
  return {frames, encoder.frame_lengths((~input.padding_mask).sum(/*dim=*/1)).cpu()};
}

}  // namespace

MaskedInput AudioEncoderImpl::apply_mask(const EncoderInput& input, at::Generator& generator) {
  const auto [frames, lengths] = frames_and_lengths(*this, input);
  const auto mask = span_mask(lengths, frames, options_.mask(), generator);  // [B,T]
  return {input, mask.to(input.source.device())};
}

EncoderOutput AudioEncoderImpl::local_features(const EncoderInput& input) {
  TORCH_CHECK(input.source.dim() == 2, "audio encoder: expected waveforms [B,S], got shape ",
              input.source.sizes());
  EncoderOutput out;
  const auto features = feature_extractor(input.source).transpose(1, 2);  // [B,T,C]
  const int64_t frames = features.size(1);
  TORCH_CHECK(frames > 0, "audio encoder: ", input.source.size(1),
              " samples are shorter than the conv stack's receptive field");
  out.padding_mask = frame_padding_mask(input.padding_mask, frames);  // [B,T] or undefined
  out.local_features = feature_projection(features);                  // [B,T,D]
  return out;
}

EncoderOutput AudioEncoderImpl::extract_features(const EncoderInput& input,
                                                 const torch::Tensor& mask) {
  EncoderOutput out = local_features(input);
  const int64_t frames = out.local_features.size(1);
  auto x = feature_dropout(out.local_features);
  if (mask.defined()) {
    TORCH_CHECK(mask.size(1) == frames, "audio encoder: mask has ", mask.size(1),
                " frames but the waveform gives ", frames);
    x = torch::where(mask.unsqueeze(-1), masked_spec_embed.to(x.scalar_type()).view({1, 1, -1}), x);
  }
  auto context = encoder(x, out.padding_mask);
  out.x = context.x;
  out.layer_results = std::move(context.layer_results);
  out.block_input = context.block_input;
  return out;
}

EncoderOutput AudioEncoderImpl::teacher_features(const EncoderInput& input,
                                                 const EncoderOutput& student) {
  TORCH_CHECK(student.local_features.defined(),
              "audio teacher: the student's output carries no local_features");
  EncoderOutput out;
  out.local_features = student.local_features.detach();  // [B,T,D]
  // From the input, not the student's output: a 2.0 student's padding mask covers kept frames.
  out.padding_mask = frame_padding_mask(input.padding_mask, out.local_features.size(1));
  auto context = encoder(out.local_features, out.padding_mask);
  out.x = context.x;
  out.layer_results = std::move(context.layer_results);
  return out;
}

torch::Tensor AudioEncoderImpl::v2_mask(const EncoderInput& input, int64_t clones,
                                        at::Generator& generator) {
  const auto [frames, lengths] = frames_and_lengths(*this, input);
  const auto mask = block_mask_1d(lengths.repeat_interleave(clones, 0), frames, options_.v2_mask(),
                                  generator);  // [B*M,T]
  return mask.to(input.source.device());
}

EncoderOutput AudioEncoderImpl::extract_kept_features(const EncoderInput& input,
                                                      const torch::Tensor& ids_keep,
                                                      int64_t clones) {
  EncoderOutput out = local_features(input);  // once per example
  const auto padding = out.padding_mask;      // [B,T] or undefined
  auto context =
      encoder->forward_kept(feature_dropout(out.local_features), padding, ids_keep, clones);
  out.x = context.x;  // [B*M,Tk,D]
  if (padding.defined()) out.padding_mask = gather_copies(padding, ids_keep, clones);
  return out;
}

std::shared_ptr<AudioEncoderImpl> make_audio_encoder(const AudioEncoderOptions& options) {
  return std::make_shared<AudioEncoderImpl>(options);
}

}  // namespace data2vec::audio
