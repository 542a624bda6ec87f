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

// The gradient of y = gelu(x) (erf) from x and y themselves: dx = dy (Phi(x) + x phi(x)) with
// Phi(x) = y / x (1/2 at x = 0), so only the density's exp is evaluated, not erf again (y from
// torch::gelu, whose erf is within 1.5e-7 of the true one). Also the column sums of dx: the bias
// gradient of a linear before the GELU, in the same pass (vec::sum_rows_in_chunks). dy, x, y:
// contiguous CPU fp32 [rows, cols]. Against gelu_backward + sum(0): 0.43 + 0 against 1.01 + 0.17
// ms at [3152,768] (2 threads, AVX512); linear(..., Activation::kGelu) in nn/gemm.h uses it.
struct GeluGradient {
  torch::Tensor input;        // [rows, cols]
  torch::Tensor column_sums;  // [cols]
};
GeluGradient gelu_backward_from_output(const torch::Tensor& dy, const torch::Tensor& x,
                                       const torch::Tensor& y);

}  // namespace data2vec::nn
