// Exact (erf) GELU through a vectorised erf: gelu(x) = x/2 (1 + erf(x / sqrt 2)), the function
// torch::gelu computes, with erf from nn/vec_math.h (absolute error below 2^-23 over every
// float; tests/test_nn_gelu.cpp). Forward and backward are one pass each over the tensor.
#pragma once

#include <torch/torch.h>

namespace data2vec::nn {

// GELU of x (any shape). CPU fp32 goes through the polynomial erf; any other device or dtype
// (bf16 under autocast, CUDA) falls back to nn::gelu below. Differentiable.
torch::Tensor gelu_erf(const torch::Tensor& x);

// torch::gelu whose backward reads contiguous tensors. LibTorch 1.13's CPU fp32 gelu_backward
// returns garbage (values up to 1e38, different from run to run) when the incoming gradient is
// strided differently from the saved input, as after `gelu(y).movedim(-1, 1)` in the 2.0
// decoder (tests/test_nn_gelu.cpp shows the kernel's failure and this function's result).
torch::Tensor gelu(const torch::Tensor& x);

}  // namespace data2vec::nn
