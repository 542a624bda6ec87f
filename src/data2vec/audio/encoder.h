// The audio encoder (arXiv 2202.03555; fairseq's data2vec configs, audio column): a
// wav2vec 2.0-style model as data2vec audio uses it.
//
//   waveform [B,S] -> feature_extractor (7 Conv1d, each -> LayerNorm over channels -> GELU)
//   -> [B,T,C] -> feature_projection (LayerNorm(C) -> Linear(C,D)) = local_features [B,T,D]
//   -> dropout -> masked frames replaced by masked_spec_embed
//   -> encoder: x + pos_conv_embed(x) -> LayerNorm -> dropout -> L post-LN blocks -> x [B,T,D]
//
// Shapes: B batch, S samples (16 kHz), C conv channels, T frames (one per 320 samples with the
// default convs; receptive field 400 samples), D width, L layers.
//
// The teacher (data2vec "ema_transformer_only" + "ema_layers_only") runs only `encoder` on the
// student's unmasked local features: no CNN, no projection in the teacher pass. Its pos conv and
// its unused local parts are copied from the student rather than averaged (ema_copied_prefixes).
//
// Registered names, and how they map to Hugging Face's Data2VecAudioModel:
//   ours                                          Hugging Face
//   feature_extractor.conv_layers.{i}.conv.weight       (same)
//   feature_extractor.conv_layers.{i}.layer_norm.*      (same)
//   feature_projection.layer_norm.*                     (same)
//   feature_projection.projection.*                     (same)
//   masked_spec_embed                                   (same)
//   encoder.pos_conv_embed.layers.{j}.conv.*            (same)
//   encoder.layer_norm.*                                (same)
//   encoder.layers.{i}.attention.query.*                encoder.layers.{i}.attention.q_proj.*
//   encoder.layers.{i}.attention.key.*                  encoder.layers.{i}.attention.k_proj.*
//   encoder.layers.{i}.attention.value.*                encoder.layers.{i}.attention.v_proj.*
//   encoder.layers.{i}.attention.output.*               encoder.layers.{i}.attention.out_proj.*
//   encoder.layers.{i}.layer_norm.*                     (same)
//   encoder.layers.{i}.feed_forward.fc1.* encoder.layers.{i}.feed_forward.intermediate_dense.*
//   encoder.layers.{i}.feed_forward.fc2.* encoder.layers.{i}.feed_forward.output_dense.*
//   encoder.layers.{i}.final_layer_norm.*               (same)
// (hf_audio_name() below applies this table; audio/hf.h reads and writes HF's config.json.)
// HF's two fixed epsilons are kept: the conv and positional-conv layer norms use 1e-5
// (kConvLayerNormEps) whatever layer_norm_eps says.
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

#include "data2vec/audio/masking.h"
#include "data2vec/core/encoder.h"
#include "data2vec/nn/transformer.h"

namespace data2vec::audio {

// One layer of the convolutional feature extractor.
struct ConvLayerSpec {
  int64_t dim;     // output channels
  int64_t kernel;  // kernel size in input steps
  int64_t stride;
};

// wav2vec 2.0's stack [(dim,10,5), (dim,3,2) x4, (dim,2,2) x2]: stride 320, receptive field 400.
std::vector<ConvLayerSpec> default_conv_layers(int64_t dim = 512);

// Output steps of the conv stack for `samples` input steps: floor((L - k) / s) + 1 per layer,
// 0 when the input is shorter than the receptive field.
int64_t conv_output_length(int64_t samples, const std::vector<ConvLayerSpec>& layers);

// Input steps under one output step of the conv stack (400 for wav2vec 2.0's): the shortest input
// that gives a frame.
int64_t conv_receptive_field(const std::vector<ConvLayerSpec>& layers);

// The epsilon of the conv feature extractor's and the positional convolutions' layer norms
// (PyTorch's LayerNorm default, as fairseq and Hugging Face build them).
inline constexpr double kConvLayerNormEps = 1e-5;

struct AudioEncoderOptions {
  /// Conv feature extractor. Default default_conv_layers(512).
  TORCH_ARG(std::vector<ConvLayerSpec>, conv_layers) = default_conv_layers();
  /// Bias on the feature extractor's convolutions (HF conv_bias). Default false.
  TORCH_ARG(bool, conv_bias) = false;
  /// The feature extractor keeps its activations channels last, [B,S,C], convolving them as
  /// channels-last [B,C,1,S] images (no layout copies around its layer norms); false runs the
  /// plain Conv1d twin on [B,C,S]. Same weights and results either way
  /// (tests/test_audio_encoder.cpp). Default true.
  TORCH_ARG(bool, conv_channels_last) = true;
  /// Width D. Default 768.
  TORCH_ARG(int64_t, dim) = 768;
  /// Layers L. Default 12.
  TORCH_ARG(int64_t, depth) = 12;
  /// Attention heads. Default 12.
  TORCH_ARG(int64_t, num_heads) = 12;
  /// Feed-forward hidden width. Default 3072.
  TORCH_ARG(int64_t, mlp_dim) = 3072;
  /// Dropout on the residual branches and after the encoder's input LayerNorm. Default 0.1.
  TORCH_ARG(double, dropout) = 0.1;
  /// Dropout on attention probabilities. Default 0.1.
  TORCH_ARG(double, attention_dropout) = 0.1;
  /// Dropout after the feed-forward GELU. Default 0.0.
  TORCH_ARG(double, activation_dropout) = 0.0;
  /// Dropout on the projected local features (fairseq dropout_input). Default 0.0.
  TORCH_ARG(double, feature_dropout) = 0.0;
  /// Probability of skipping each block while training. Default 0.05.
  TORCH_ARG(double, layerdrop) = 0.05;
  /// Convolutions in the positional encoder. Default 5.
  TORCH_ARG(int64_t, pos_conv_depth) = 5;
  /// Kernel of each positional convolution. Default 19.
  TORCH_ARG(int64_t, pos_conv_kernel) = 19;
  /// Groups of each positional convolution (D must divide by it). Default 16.
  TORCH_ARG(int64_t, pos_conv_groups) = 16;
  /// Epsilon of the projection's, the encoder's and the blocks' layer norms. Default 1e-5.
  TORCH_ARG(double, layer_norm_eps) = 1e-5;
  /// Which tensor of each block is its layer result. Default ffn.
  TORCH_ARG(LayerResultKind, layer_result) = LayerResultKind::kFfn;
  /// Span masking of the student. Default mask_prob 0.65, mask_length 10, min_masks 1.
  TORCH_ARG(SpanMaskOptions, mask) = SpanMaskOptions();
  /// data2vec 2.0 masking: blocks of 5 frames, 50% masked.
  TORCH_ARG(BlockMask1dOptions, v2_mask) = BlockMask1dOptions();
  /// The GEMM library of the transformer blocks' linears (nn/gemm.h). Default: oneDNN where
  /// the build has it. The parameters and the checkpoint are the same either way.
  TORCH_ARG(nn::GemmLibrary, gemm) = nn::default_gemm_library();
};

// Presets by name (ViT / wav2vec 2.0 sizes, depth x width x mlp x heads):
//   mini  4 x 128 x 512 x 2,    conv width 128 (CPU demos: the CNN costs ~0.3 GFLOP per second of
//                               audio forward, a quarter of tiny's)
//   tiny  12 x 192 x 768 x 3,   conv width 256 (half of 512: the CNN dominates a tiny model's
//                               cost on CPU; documented deviation)
//   small 12 x 384 x 1536 x 6,  conv width 512
//   base  12 x 768 x 3072 x 12, conv width 512 (data2vec audio base)
//   large 24 x 1024 x 4096 x 16, conv width 512 (post-LN kept; fairseq's large is the same stack)
AudioEncoderOptions audio_preset(const std::string& name);

// Hugging Face Data2VecAudioModel name of one of our parameter names (see the table above).
std::string hf_audio_name(const std::string& name);

// Conv1d -> LayerNorm over channels -> GELU, channels last: [B,S,Cin] -> [B,S',Cout].
// `channels_last`: [B,S,Cin] is, in memory, the channels-last image [B,Cin,1,S], which oneDNN
// convolves as it lies and returns as [B,Cout,1,S'] channels last, i.e. [B,S',Cout]: the layer
// norm and GELU then read and write it in place (the plain twin runs Conv1d on [B,Cin,S] between
// two transposed copies, forward and backward).
class ConvLayerImpl : public torch::nn::Module {
 public:
  ConvLayerImpl(int64_t in_dim, const ConvLayerSpec& spec, bool bias, bool channels_last = true);
  torch::Tensor forward(const torch::Tensor& x);

  torch::nn::Conv1d conv{nullptr};           // weight [Cout,Cin,k] in either path
  torch::nn::LayerNorm layer_norm{nullptr};  // over the Cout channels

 private:
  int64_t stride_;
  bool channels_last_;
};
TORCH_MODULE(ConvLayer);

// The stack of ConvLayers: waveform [B,S] -> features [B,C,T] (a transposed view of the
// channels-last [B,T,C] the layers produce).
class FeatureExtractorImpl : public torch::nn::Module {
 public:
  FeatureExtractorImpl(const std::vector<ConvLayerSpec>& layers, bool bias,
                       bool channels_last = true);
  torch::Tensor forward(const torch::Tensor& waveform);

  std::vector<ConvLayer> conv_layers;
};
TORCH_MODULE(FeatureExtractor);

// LayerNorm(C) -> Linear(C,D): [B,T,C] -> [B,T,D].
class FeatureProjectionImpl : public torch::nn::Module {
 public:
  FeatureProjectionImpl(int64_t in_dim, int64_t dim, double eps);
  torch::Tensor forward(const torch::Tensor& features);

  torch::nn::LayerNorm layer_norm{nullptr};
  torch::nn::Linear projection{nullptr};
};
TORCH_MODULE(FeatureProjection);

// Grouped Conv1d ("same" padding; an even kernel drops the extra last frame) -> LayerNorm over
// channels without affine parameters -> GELU: [B,D,T] -> [B,D,T].
class PositionalConvLayerImpl : public torch::nn::Module {
 public:
  PositionalConvLayerImpl(int64_t dim, int64_t kernel, int64_t groups);
  torch::Tensor forward(const torch::Tensor& x);

  torch::nn::Conv1d conv{nullptr};
  int64_t remove_frames = 0;  // 1 for an even kernel
};
TORCH_MODULE(PositionalConvLayer);

// The positional layers applied in sequence: x [B,T,D] -> positional encoding [B,T,D].
class PositionalConvEmbeddingImpl : public torch::nn::Module {
 public:
  PositionalConvEmbeddingImpl(int64_t dim, int64_t depth, int64_t kernel, int64_t groups);
  torch::Tensor forward(const torch::Tensor& x);

  std::vector<PositionalConvLayer> layers;
};
TORCH_MODULE(PositionalConvEmbedding);

// What the contextualizer returns.
struct ContextOutput {
  torch::Tensor x;                           // [B,T,D]
  std::vector<torch::Tensor> layer_results;  // L x [B,T,D]
  torch::Tensor block_input;                 // [B,T,D] what entered the first block
};

// The transformer half ("encoder" in Hugging Face's naming), which the teacher runs alone:
//   x (padded frames zeroed) + pos_conv_embed(x) -> LayerNorm -> dropout -> post-LN blocks.
// Layerdrop: while training each block is skipped with probability `layerdrop` (drawn from the
// global torch generator). A skipped block is the identity, and its layer result is what the
// identity yields: zeros for ffn results (the feed-forward added nothing), its input for block
// results. So layer_results always holds L entries. Only the student drops layers, and data2vec
// never reads the student's layer results; the teacher runs in eval mode with all L blocks.
class AudioTransformerImpl : public torch::nn::Module {
 public:
  explicit AudioTransformerImpl(const AudioEncoderOptions& options);
  // x [B,T,D]; padding_mask [B,T] bool, true = padding (undefined: none).
  ContextOutput forward(const torch::Tensor& x, const torch::Tensor& padding_mask);
  // data2vec 2.0: `clones` copies of x [B,T,D], each with the frames it does not keep (not in
  // ids_keep [B*clones,Tk]) and its padding zeroed, through the positional convolution; then its
  // kept frames alone through LayerNorm, dropout and the blocks. Returns x [B*clones,Tk,D] (the
  // layer results are not kept).
  ContextOutput forward_kept(const torch::Tensor& x, const torch::Tensor& padding_mask,
                             const torch::Tensor& ids_keep, int64_t clones);

  PositionalConvEmbedding pos_conv_embed{nullptr};
  torch::nn::LayerNorm layer_norm{nullptr};
  torch::nn::Dropout dropout{nullptr};
  std::vector<nn::PostNormBlock> layers;

 private:
  double layerdrop_;
  bool ffn_results_;
};
TORCH_MODULE(AudioTransformer);

class AudioEncoderImpl : public EncoderImpl {
 public:
  explicit AudioEncoderImpl(const AudioEncoderOptions& options);

  int64_t embed_dim() const override { return options_.dim(); }
  int64_t num_layers() const override { return options_.depth(); }
  DecoderOptions default_decoder_options() const override {
    return DecoderOptions().gemm(options_.gemm());
  }

  // Span mask over the frames (see span_mask); the student's input is the unchanged waveform,
  // the mask embedding is applied inside extract_features. input.padding_mask is [B,S] over
  // samples, padding at the end of each example.
  MaskedInput apply_mask(const EncoderInput& input, at::Generator& generator) override;

  // input.source [B,S] waveform; input.padding_mask [B,S] (undefined: none); mask [B,T].
  // Returns x [B,T,D], L layer results, the frame padding mask [B,T] (undefined when the input
  // has none) and local_features [B,T,D] (projected CNN features before dropout and masking).
  EncoderOutput extract_features(const EncoderInput& input, const torch::Tensor& mask) override;

  // The teacher's pass: `encoder` alone on student.local_features (detached) with the student's
  // frame padding mask. input.source is never read.
  EncoderOutput teacher_features(const EncoderInput& input, const EncoderOutput& student) override;

  std::vector<std::string> ema_copied_prefixes() const override;

  // data2vec 2.0: 1-D block masks (options.v2_mask) of M copies; the CNN once per example, the
  // positional convolution per copy with its masked frames zeroed, the blocks on kept frames
  // only; a 1-D decoder (384, k 7, g 16, 4 blocks, residual).
  bool supports_kept_encoding() const override { return true; }
  torch::Tensor v2_mask(const EncoderInput& input, int64_t clones,
                        at::Generator& generator) override;
  EncoderOutput extract_kept_features(const EncoderInput& input, const torch::Tensor& ids_keep,
                                      int64_t clones) override;

  // Frames T for a waveform of `samples` samples.
  int64_t num_frames(int64_t samples) const;
  // Real frames per example [B] int64 from real samples per example [B] (same device).
  torch::Tensor frame_lengths(const torch::Tensor& sample_lengths) const;
  // [B,T] bool frame padding mask from a [B,S] sample padding mask (undefined -> undefined). A
  // frame is padding when it lies at or beyond the conv formula's length of the real samples,
  // so real frames never see padded samples.
  torch::Tensor frame_padding_mask(const torch::Tensor& sample_padding_mask, int64_t frames) const;

  const AudioEncoderOptions& options() const { return options_; }

  FeatureExtractor feature_extractor{nullptr};
  FeatureProjection feature_projection{nullptr};
  torch::nn::Dropout feature_dropout{nullptr};
  torch::Tensor masked_spec_embed;  // [D]
  AudioTransformer encoder{nullptr};

 private:
  // The CNN and projection once per example: out.local_features [B,T,D] and out.padding_mask
  // [B,T] (undefined when the input has none); x and layer_results left empty.
  EncoderOutput local_features(const EncoderInput& input);

  AudioEncoderOptions options_;
};
TORCH_MODULE(AudioEncoder);

std::shared_ptr<AudioEncoderImpl> make_audio_encoder(const AudioEncoderOptions& options);

}  // namespace data2vec::audio
