// The data2vec 2.0 decoder (data2vec 2.0, arXiv 2212.07525): a light CNN that fills the masked
// slots.
//
//   input [R,T,D] (encoder output at kept slots, N(0, 0.01) noise at masked slots, in the
//   original order) -> blocks of Conv(kernel k, groups g) -> LayerNorm(no affine) -> GELU, with a
//   residual around each block whose input and output widths match -> projection -> [R,T,D]
//   where the projection is Linear(Dd, D), or for text (fairseq projection_layers 2, ratio 2)
//   Linear(Dd, 2 Dd) -> GELU -> Linear(2 Dd, D)
//
// 1-D over time (audio, text) or 2-D over a patch grid (images: T = G_h * G_w, row-major).
// Shapes: R rows (examples x copies), T positions, D encoder width, Dd decoder width.
//
// Registered names (fairseq Decoder1d / Decoder2d): blocks.{i}.conv.{weight,bias}, and proj.*:
// one Linear as proj.{weight,bias}, several as proj.{0,2,...}.{weight,bias} (GELUs between).
#pragma once

#include <torch/torch.h>

#include <vector>

#include "data2vec/nn/gemm.h"

namespace data2vec {

struct DecoderOptions {
  /// Decoder width Dd. Default 384 (audio).
  TORCH_ARG(int64_t, dim) = 384;
  /// Convolution kernel k (odd: "same" padding). Default 7 (audio).
  TORCH_ARG(int64_t, kernel) = 7;
  /// Convolution groups g (D and Dd must divide by it). Default 16.
  TORCH_ARG(int64_t, groups) = 16;
  /// Number of conv blocks. Default 4 (audio).
  TORCH_ARG(int64_t, layers) = 4;
  /// Residual around each block (where widths match). Default true (text: false).
  TORCH_ARG(bool, residual) = true;
  /// Empty: 1-D over time. {G_h, G_w}: 2-D over a row-major patch grid. Default empty.
  TORCH_ARG(std::vector<int64_t>, grid) = {};
  /// Std of the noise filling the masked slots. Default 0.01.
  TORCH_ARG(double, mask_noise_std) = 0.01;
  /// Linear layers of the final projection (fairseq projection_layers): 1 -> Linear(Dd, D);
  /// n > 1 -> Linear(Dd, ratio Dd) -> GELU -> ... -> Linear(ratio Dd, D). Default 1 (text: 2).
  TORCH_ARG(int64_t, projection_layers) = 1;
  /// Width of the projection's hidden layers, in units of Dd (fairseq projection_ratio). Default 2.
  TORCH_ARG(double, projection_ratio) = 2.0;
  /// The GEMM library of the projection's linears (nn/gemm.h): the encoder's. Default: oneDNN
  /// where this build has it.
  TORCH_ARG(nn::GemmLibrary, gemm) = nn::default_gemm_library();
};

// `base` with every positive field of `overrides` (dim, kernel, groups, layers) taken over;
// residual / grid / noise / projection stay the base's. For config keys where 0 means "the
// modality's default".
DecoderOptions override_decoder_options(DecoderOptions base, int64_t dim, int64_t kernel,
                                        int64_t groups, int64_t layers);

// N(0, std^2) noise of `sizes` for the decoder's masked slots, from the default generator of
// options' device. On CPU fp32 it is drawn in fixed chunks of 65536 values, each from its own
// generator seeded from one draw of the default one, the chunks split over the threads:
// LibTorch's normal_ runs on one thread (the 2.0 demo's 256 x 50 x 128 noise: 5.1-8.4 ms of a
// 140 ms step). The values depend on the seed, never on the thread count.
torch::Tensor mask_noise(torch::IntArrayRef sizes, double std, const torch::TensorOptions& options);

// One block: Conv -> LayerNorm over channels (no affine) -> GELU.
class DecoderBlockImpl : public torch::nn::Module {
 public:
  DecoderBlockImpl(int64_t in_dim, const DecoderOptions& options);
  // x [R,C,T] (1-D) or [R,C,G_h,G_w] (2-D) -> the same with Dd channels.
  torch::Tensor forward(const torch::Tensor& x);

  torch::nn::AnyModule conv;  // Conv1d or Conv2d, registered as "conv"
  int64_t dim;
};
TORCH_MODULE(DecoderBlock);

class DecoderImpl : public torch::nn::Module {
 public:
  // `input_dim` D: the encoder's width (also the output width).
  DecoderImpl(int64_t input_dim, const DecoderOptions& options);
  // x [R,T,D]; padding_mask [R,T] bool (true = padding, zeroed before every conv) or undefined.
  // Returns [R,T,D].
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& padding_mask);

  const DecoderOptions& options() const { return options_; }

  std::vector<DecoderBlock> blocks;  // registered as blocks.{i}
  // Dd -> D, registered as "proj": one Linear, or (projection_layers > 1) a Sequential.
  torch::nn::Linear proj{nullptr};
  torch::nn::Sequential projection_layers{nullptr};

 private:
  DecoderOptions options_;
};
TORCH_MODULE(Decoder);

}  // namespace data2vec
