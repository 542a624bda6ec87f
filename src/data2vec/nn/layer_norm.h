// Layer normalisation over the last dimension, y = (x - mean) / sqrt(var + eps) * weight + bias
// (the biased variance, as torch::layer_norm), as one pass per row forward and one backward that
// also sums the weight and bias gradients (vec::sum_rows_in_chunks: the same for any thread
// count). LibTorch 1.13's CPU kernels reduce each row in one dependent chain: at [3152,192]
// (vision-tiny, batch 16), 2 threads, its forward takes 0.18-0.19 ms and its backward 0.21,
// these 0.06 and 0.10 (a copy of the tensor takes 0.04).
#pragma once

#include <torch/torch.h>

namespace data2vec::nn {

// Layer norm of x over its last dimension with weight and bias [D] (either may be undefined:
// none, as torch::layer_norm). Contiguous CPU fp32 goes through the kernels above; any other
// device or dtype (bf16 under autocast, CUDA) to torch::layer_norm. Differentiable in x, weight
// and bias (once: no double backward).
torch::Tensor layer_norm(const torch::Tensor& x, const torch::Tensor& weight,
                         const torch::Tensor& bias, double eps);

// The module's parameters and epsilon through the function above.
torch::Tensor layer_norm(const torch::Tensor& x, const torch::nn::LayerNorm& norm);

}  // namespace data2vec::nn
