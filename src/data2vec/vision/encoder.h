// The data2vec 1.0 vision encoder: a BEiT-style ViT (arXiv 2202.03555; fairseq's data2vec configs, vision column).
//
//   pixels [B,C,H,W] -> Conv2d patch embed [B,N,D] -> mask token at masked patches
//   -> prepend CLS [B,1+N,D] -> L pre-LN blocks (layer scale, no key bias, eps 1e-6) with a
//   relative position bias [Hd,1+N,1+N] -> final LayerNorm -> x [B,1+N,D]
//
// Shapes: B batch, C channels, P patch side, G = image_size / P grid side, N = G*G patches,
// T = 1 + N tokens (CLS first), D width, Hd heads, L layers.
//
// Parameter names and their Hugging Face Data2VecVisionModel counterparts (an HF checkpoint maps
// onto ours by this table; the HF classification / pretraining wrappers add the prefix
// "data2vec_vision."):
//
//   ours                                                 HF Data2VecVision
//   embeddings.cls_token                   [1,1,D]       embeddings.cls_token
//   embeddings.mask_token                  [1,1,D]       embeddings.mask_token
//   embeddings.patch_embeddings.projection.{weight,bias} embeddings.patch_embeddings.projection.*
//                                          [D,C,P,P],[D]
//   encoder.relative_position_bias.relative_position_bias_table   (shared bias, the default)
//                                  [(2G-1)^2+3,Hd]
//                                  encoder.relative_position_bias.relative_position_bias_table
//   encoder.relative_position_bias.relative_position_index (int64 buffer [T,T])
//                                                        ...relative_position_index (HF: buffer)
//   encoder.layer_relative_position_bias.{i}.relative_position_bias_table   (per-layer bias)
//                                                        encoder.layer.{i}.attention.attention.relative_position_bias.relative_position_bias_table
//   embeddings.position_embeddings       [1,1+N,D]     embeddings.position_embeddings (absolute)
//   encoder.layer.{i}.layernorm_before.{weight,bias}     encoder.layer.{i}.layernorm_before.*
//   encoder.layer.{i}.attention.query.{weight,bias} encoder.layer.{i}.attention.attention.query.*
//   encoder.layer.{i}.attention.key.weight (no bias)
//   encoder.layer.{i}.attention.attention.key.weight
//   encoder.layer.{i}.attention.value.{weight,bias} encoder.layer.{i}.attention.attention.value.*
//   encoder.layer.{i}.attention.output.{weight,bias}     encoder.layer.{i}.attention.output.dense.*
//   encoder.layer.{i}.lambda_1                 [D]       encoder.layer.{i}.lambda_1
//   encoder.layer.{i}.layernorm_after.{weight,bias}      encoder.layer.{i}.layernorm_after.*
//   encoder.layer.{i}.feed_forward.fc1.{weight,bias}     encoder.layer.{i}.intermediate.dense.*
//   encoder.layer.{i}.feed_forward.fc2.{weight,bias}     encoder.layer.{i}.output.dense.*
//   encoder.layer.{i}.lambda_2                 [D]       encoder.layer.{i}.lambda_2
//   layernorm.{weight,bias}                    [D]       layernorm.* (without mean pooling)
//   pooler.layernorm.{weight,bias}             [D]       pooler.layernorm.* (with mean pooling)
// vision/hf.h applies this table. Every forward-changing option of HF's Data2VecVisionConfig has
// an option here: shared and/or per-layer relative bias (both add), absolute positions, layer
// scale (0 = none), mask token, mean pooling.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "data2vec/core/encoder.h"
#include "data2vec/nn/transformer.h"
#include "data2vec/vision/masking.h"

namespace data2vec::vision {

struct VisionEncoderOptions {
  /// Input image side in pixels (square images). Default 224.
  TORCH_ARG(int64_t, image_size) = 224;
  /// Patch side P (image_size must divide by it). Default 16.
  TORCH_ARG(int64_t, patch_size) = 16;
  /// Input channels C. Default 3.
  TORCH_ARG(int64_t, in_channels) = 3;
  /// Width D. Default 768 (base).
  TORCH_ARG(int64_t, dim) = 768;
  /// Layers L. Default 12.
  TORCH_ARG(int64_t, depth) = 12;
  /// Attention heads. Default 12.
  TORCH_ARG(int64_t, num_heads) = 12;
  /// Feed-forward hidden width. Default 3072.
  TORCH_ARG(int64_t, mlp_dim) = 3072;
  /// Initial layer-scale value (BEiT: 0.1; 1e-4 for base pretraining). Default 0.1.
  TORCH_ARG(double, layer_scale_init) = 0.1;
  /// Layer-norm epsilon. Default 1e-6.
  TORCH_ARG(double, layer_norm_eps) = 1e-6;
  /// One relative position table shared by all layers (BEiT / data2vec). Default true.
  TORCH_ARG(bool, shared_relative_position_bias) = true;
  /// One relative position table per layer (HF use_relative_position_bias); with the shared
  /// table on too, the two biases add. Default false.
  TORCH_ARG(bool, layer_relative_position_bias) = false;
  /// Learned absolute position embeddings [1,1+N,D] added after the CLS token. Default false.
  TORCH_ARG(bool, absolute_position_embeddings) = false;
  /// With absolute_position_embeddings: the table starts as the fixed 2-D sin-cos positions of
  /// MAE / data2vec 2.0 (sincos_position_table; the CLS row zero) and is frozen (no gradient).
  /// It stays an ordinary position_embeddings tensor, so Hugging Face reads it as learned
  /// absolute positions. Default false.
  TORCH_ARG(bool, sincos_position_embeddings) = false;
  /// BEiT's init: the residual output projections of layer l are divided by sqrt(2 l) so deep
  /// stacks start near the identity (data2vec 1.0 vision); data2vec 2.0 does not. Default true.
  TORCH_ARG(bool, depth_scaled_init) = true;
  /// A learned mask token (needed to mask patches the 1.0 way). Default true.
  TORCH_ARG(bool, use_mask_token) = true;
  /// HF use_mean_pooling: no final layer norm on the sequence; the pooled output is the mean of
  /// the patch tokens (through pooler.layernorm when there is a pooler) instead of the CLS
  /// token. Default false.
  TORCH_ARG(bool, mean_pooling) = false;
  /// HF add_pooling_layer: the pooler module (a layer norm with mean pooling, nothing without).
  /// Default false.
  TORCH_ARG(bool, pooler) = false;
  /// Which tensor of each block is its layer result. Default block (data2vec 1.0 vision).
  TORCH_ARG(LayerResultKind, layer_result) = LayerResultKind::kBlock;
  /// Dropout on the residual branches. Default 0.
  TORCH_ARG(double, dropout) = 0.0;
  /// Dropout on the attention probabilities. Default 0.
  TORCH_ARG(double, attention_dropout) = 0.0;
  /// The GEMM library of the transformer blocks' linears (nn/gemm.h). Default: oneDNN where
  /// the build has it. The parameters and the checkpoint are the same either way.
  TORCH_ARG(nn::GemmLibrary, gemm) = nn::default_gemm_library();
  /// Fraction of patches masked (exact count round(ratio * N) per image). Default 0.6.
  TORCH_ARG(double, mask_ratio) = 0.6;
  /// Smallest mask block in patches; scale with the grid: max(1, round(16 N / 196)). Default 16.
  TORCH_ARG(int64_t, min_mask_patches) = 16;
  /// Aspect ratio range of mask blocks (log-uniform). Default [0.3, 1/0.3].
  TORCH_ARG(double, min_aspect) = 0.3;
  TORCH_ARG(double, max_aspect) = 1.0 / 0.3;
  /// data2vec 2.0: side of the kept blocks of the inverse block mask (mask_ratio applies; the
  /// 2.0 recipe masks 0.8). Default 3.
  TORCH_ARG(int64_t, inverse_block_size) = 3;

 public:  // TORCH_ARG leaves the section private
  int64_t grid_size() const { return image_size() / patch_size(); }
  int64_t num_patches() const { return grid_size() * grid_size(); }
  BlockMaskOptions block_mask_options() const;
};

// Named sizes: "tiny" 12x192x768x3h, "small" 12x384x1536x6h, "base" 12x768x3072x12h,
// "large" 24x1024x4096x16h (224 px, patch 16, 3 channels), and "fmnist-tiny" for 28x28 grey
// images (patch 4: a 7x7 grid). Unknown names throw, listing the known ones.
VisionEncoderOptions vision_preset(const std::string& name);

// The 2-D sin-cos positions of a grid x grid patch grid, [grid*grid, dim] in row-major patch
// order, as MAE's get_2d_sincos_pos_embed (which data2vec 2.0's image encoder uses): the first
// dim/2 channels encode the patch's column, the last dim/2 its row, each half as
// [sin(p w_k), cos(p w_k)] with w_k = 10000^(-k / (dim/4)), k = 0 .. dim/4 - 1. dim % 4 == 0.
torch::Tensor sincos_position_table(int64_t grid, int64_t dim);
std::vector<std::string> vision_preset_names();

// Conv2d patch embedding: [B,C,H,W] -> [B,N,D].
class PatchEmbeddingsImpl : public torch::nn::Module {
 public:
  PatchEmbeddingsImpl(int64_t in_channels, int64_t dim, int64_t patch_size);
  torch::Tensor forward(const torch::Tensor& pixels);

  torch::nn::Conv2d projection{nullptr};  // kernel = stride = P
};
TORCH_MODULE(PatchEmbeddings);

// The tokens entering the first block, and the same before masking.
struct VisionEmbeddingsOutput {
  torch::Tensor tokens;  // [B,1+N,D] CLS + patch embeddings, masked ones replaced by the mask token
  torch::Tensor local;   // [B,1+N,D] CLS + patch embeddings, unmasked
};

class VisionEmbeddingsImpl : public torch::nn::Module {
 public:
  VisionEmbeddingsImpl(const VisionEncoderOptions& options);
  // pixels [B,C,H,W]; patch_mask [B,N] bool (true = masked) or undefined.
  VisionEmbeddingsOutput forward(const torch::Tensor& pixels, const torch::Tensor& patch_mask);

  torch::Tensor cls_token;            // [1,1,D]
  torch::Tensor mask_token;           // [1,1,D]; undefined without use_mask_token
  torch::Tensor position_embeddings;  // [1,1+N,D]; undefined without absolute positions
  PatchEmbeddings patch_embeddings{nullptr};
};
TORCH_MODULE(VisionEmbeddings);

// BEiT's relative position bias for a G_h x G_w grid plus the CLS token: a learned table of
// (2G_h-1)(2G_w-1) patch-to-patch offsets + 3 CLS entries (cls->token, token->cls, cls->cls).
class RelativePositionBiasImpl : public torch::nn::Module {
 public:
  RelativePositionBiasImpl(int64_t grid_h, int64_t grid_w, int64_t num_heads);
  torch::Tensor forward();  // [Hd,T,T] attention logit bias
  // The bias between kept positions only: ids_keep [R,Tk] (CLS = 0) -> [R,Hd,Tk,Tk].
  torch::Tensor forward_kept(const torch::Tensor& ids_keep);

  torch::Tensor relative_position_bias_table;  // [(2G_h-1)(2G_w-1)+3, Hd], zeros at init
  torch::Tensor relative_position_index;       // [T,T] int64 buffer: row into the table
};
TORCH_MODULE(RelativePositionBias);

// BEiT's index of (query, key) into the table; row/column 0 is the CLS token.
torch::Tensor relative_position_index(int64_t grid_h, int64_t grid_w);  // [T,T] int64

// The blocks with their position bias (HF's Data2VecVisionEncoder, registered as "encoder").
class VisionTransformerImpl : public torch::nn::Module {
 public:
  explicit VisionTransformerImpl(const VisionEncoderOptions& options);
  // x [B,T,D] -> block output [B,T,D]; appends one layer result per block to `layer_results`.
  torch::Tensor forward(torch::Tensor x, std::vector<torch::Tensor>& layer_results);
  // The same on kept tokens only: x [R,Tk,D] at positions ids_keep [R,Tk] of the 1+N tokens.
  torch::Tensor forward_kept(torch::Tensor x, const torch::Tensor& ids_keep,
                             std::vector<torch::Tensor>& layer_results);

  std::vector<nn::PreNormBlock> layers;               // L blocks, registered as "layer"
  std::vector<RelativePositionBias> position_biases;  // the shared table first, then per-layer
  std::vector<std::vector<size_t>> biases_of_layer;   // L lists of tables whose biases add

 private:
  torch::Tensor (*layer_result_)(const nn::BlockOutput&) = nullptr;  // block or ffn
};
TORCH_MODULE(VisionTransformer);

class VisionEncoderImpl : public data2vec::EncoderImpl {
 public:
  explicit VisionEncoderImpl(const VisionEncoderOptions& options);

  int64_t embed_dim() const override { return options_.dim(); }
  int64_t num_layers() const override { return options_.depth(); }
  // The CLS token: T = 1 + N, and position 0 is never masked.
  int64_t num_prefix_tokens() const override { return 1; }

  // BEiT block mask per image; the mask is [B,1+N] with column 0 (CLS) false. The student's
  // input is the unchanged images: masking happens on the patch embeddings.
  MaskedInput apply_mask(const EncoderInput& input, at::Generator& generator) override;

  // input.source [B,C,H,W]; mask [B,1+N] bool or undefined. x [B,1+N,D] after the final norm;
  // local_features = CLS + unmasked patch embeddings.
  EncoderOutput extract_features(const EncoderInput& input, const torch::Tensor& mask) override;

  // HF's pooled output of a final sequence x [B,1+N,D]: the mean of the patch tokens (then
  // pooler.layernorm when present) with mean pooling, else the CLS token. [B,D]
  torch::Tensor pool(const torch::Tensor& x);
  // The final norm of the sequence: `layernorm`, or nothing with mean pooling.
  torch::Tensor final_norm(const torch::Tensor& x);

  // data2vec 2.0: inverse block masks [B*M,1+N] (CLS column false); the kept patches plus CLS
  // through the blocks, with the relative position bias gathered for them; a 2-D decoder over
  // the G x G patch grid (768, k 3, g 16, 6 blocks, residual).
  bool supports_kept_encoding() const override { return true; }
  torch::Tensor v2_mask(const EncoderInput& input, int64_t clones,
                        at::Generator& generator) override;
  EncoderOutput extract_kept_features(const EncoderInput& input, const torch::Tensor& ids_keep,
                                      int64_t clones) override;
  DecoderOptions default_decoder_options() const override;

  const VisionEncoderOptions& options() const { return options_; }

  VisionEmbeddings embeddings{nullptr};
  VisionTransformer encoder{nullptr};
  torch::nn::LayerNorm layernorm{nullptr};         // null with mean pooling
  torch::nn::LayerNorm pooler_layernorm{nullptr};  // "pooler.layernorm": pooler + mean pooling

 private:
  VisionEncoderOptions options_;
};
TORCH_MODULE(VisionEncoder);

std::shared_ptr<VisionEncoderImpl> make_vision_encoder(const VisionEncoderOptions& options);

}  // namespace data2vec::vision
