// Matrix products on CPU fp32 through a chosen GEMM library: the transformer blocks' linears
// (nn/transformer.h) and the blocked attention's tiles (nn/attention.h) call these.
//
// Why a choice: LibTorch 1.13 runs fp32 linears through the BLAS it links (Debian: OpenBLAS
// 0.3.21, whose sgemm kernels stop at AVX2), while oneDNN, which LibTorch already links for its
// convolutions (Debian's libdnnl), has its own sgemm with AVX512 kernels. Measured on a 2-core
// AVX512 EPYC at ViT-tiny's shapes ([3152,192] x [192,576] and alike, bench/gemm_shapes.py):
// OpenBLAS 143-159 GFLOP/s, oneDNN 329-363; held to AVX2 (DNNL_MAX_CPU_ISA=AVX2) oneDNN still
// ran 1.1-1.2x OpenBLAS there and 1.7-2.3x on one head's attention products ([197,64] x
// [64,197]) (BENCHMARKS.md, 2026-12-02 17:51).
#pragma once

#include <torch/torch.h>

#include <string>

namespace data2vec::nn {

enum class GemmLibrary {
  kTorch,   // LibTorch's own kernels (torch::linear; its BLAS for the blocked attention's tiles)
  kOneDnn,  // oneDNN's sgemm (dnnl_sgemm): CPU fp32 only; elsewhere it is kTorch
};

// Whether this build links oneDNN's sgemm (CMake found Debian's libdnnl-dev).
bool have_onednn_gemm();

// Whether CPU autocast (bf16) is on: the own fp32 kernels step aside under it.
bool cpu_autocast_enabled();

// The library a model uses unless its options say otherwise: oneDNN where this build has it.
GemmLibrary default_gemm_library();

// "auto" (the default above), "torch" or "onednn" (this build must have it). Throws
// std::invalid_argument naming the value otherwise.
GemmLibrary parse_gemm_library(const std::string& name);
std::string to_string(GemmLibrary library);

// Row-major C[m,n] = beta C + op(A) op(B) on raw fp32 storage with leading dimensions (row
// strides): op(A) is [m,k] (A stored [k,m] when trans_a), op(B) is [k,n]. kTorch calls the BLAS
// LibTorch links (sgemm_), kOneDnn dnnl_sgemm. Inside a parallel region both run on the calling
// thread alone.
void sgemm(GemmLibrary library, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
           const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
           int64_t ldc);

// What a linear's autograd node applies to its output.
enum class Activation {
  kNone,
  kGelu,  // erf GELU: the feed-forward's first linear
};

// y = x W^T + b, exactly what torch::linear(x, weight, bias) computes (bias may be undefined), and
// with kGelu torch::gelu(y), bit for bit the same forward. kOneDnn on CPU fp32 outside autocast:
// one sgemm forward, two in backward (dx = dy W, dW = dy^T x) and a column sum for db; with kGelu
// the node keeps y and gelu(y) (the next linear keeps the latter anyway) and its backward forms
// the GELU's derivative and db in one pass (nn::gelu_backward_from_output). Every other case is
// torch::linear (and torch::gelu).
torch::Tensor linear(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                     GemmLibrary library, Activation activation = Activation::kNone);

// The fused attention's batched products: C[i] = A[i] B[i] for a [N,m,k] and b [N,k,n], either
// operand row-major or transposed in memory (k.transpose(1, 2) goes in as it lies, no copy).
// kTorch is torch::bmm (LibTorch 1.13 loops over the N matrices, one BLAS call each); kOneDnn
// runs one dnnl_sgemm per matrix, the N matrices split over the threads: at T = 197, Dh = 64 the
// product runs 199-223 GFLOP/s there against 65-84 through OpenBLAS (bench/gemm_shapes.py).
// Differentiable in a and b; kOneDnn takes CPU fp32 outside autocast, the rest goes to torch::bmm.
torch::Tensor batched_matmul(const torch::Tensor& a, const torch::Tensor& b, GemmLibrary library);

}  // namespace data2vec::nn
