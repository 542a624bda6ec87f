// Blocked (memory-linear) multi-head attention for CPU fp32, forward and backward.
//
// Shapes: B batch, T time steps, D width, H heads, Dh = D / H, Bq the query block (T rows up to
// kWholeRowTokens, 64 above).
//
// The heads layout lives in the GEMM strides: head h of q, k and v is the [T,Dh] matrix at
// column h*Dh of the q, k and v thirds of one [B,T,3D] tensor (row stride 3D), and the context of
// head h is written straight into columns h*Dh of a [B,T,D] result; nothing is permuted or
// copied. Work is split into (batch x head) tasks run in parallel; each walks its queries in
// blocks of Bq rows: S = Q_blk K^T [Bq,T] (one GEMM), bias, key padding and softmax in one pass
// over S while it is in cache (the row's max and sum are kept), then O_blk = P V (one GEMM).
// Above kWholeRowTokens backward recomputes S and P per block from the saved max and sum (as
// FlashAttention does), so no [T,T] matrix of any head is ever held: the largest temporaries are
// three [Bq,T] buffers per running task. Up to it, a training forward keeps P and backward reads
// it: recomputing S costs a fifth more GEMM work where the matrices are small anyway.
#pragma once

#include <torch/torch.h>

#include "data2vec/nn/gemm.h"

namespace data2vec::nn {

// Up to this many tokens one query block holds every row and backward reuses the probabilities
// forward kept ([B,H,T,T], as the fused path keeps them) instead of recomputing S; above it,
// blocks of 64 queries and recomputation (memory linear in T).
inline constexpr int64_t kWholeRowTokens = 256;

// Attention of the heads packed in `qkv` [B,T,3D] (q | k | v along the last axis, the softmax
// scale already applied to q). bias: [H,T,T], [1,H,T,T] or [B,H,T,T] added to the logits, or
// undefined; key_padding_mask: [B,T] bool, true = padding (its logits become fp32's lowest value,
// as in the plain path: a fully padded row gives a uniform softmax), or undefined. dropout: the
// probability of dropping an attention probability (a counter-based hash of a seed drawn from
// the default generator; the same mask is rebuilt in backward). Returns the context [B,T,D].
// library: which sgemm multiplies the tiles (nn/gemm.h). Differentiable in qkv and bias. CPU
// fp32 only.
torch::Tensor blocked_attention(const torch::Tensor& qkv, int64_t num_heads,
                                const torch::Tensor& bias, const torch::Tensor& key_padding_mask,
                                double dropout = 0.0, GemmLibrary library = default_gemm_library());

}  // namespace data2vec::nn
