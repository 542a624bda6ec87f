#include "data2vec/nn/attention.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <vector>

#include "data2vec/nn/gemm.h"
#include "data2vec/nn/vec_math.h"

namespace data2vec::nn {

namespace {

constexpr int64_t kQueryBlock = 64;  // Bq: rows of S per GEMM above kWholeRowTokens

// Up to kWholeRowTokens one block holds every query row: S of a head ([T,T], 256 KiB at T 256)
// stays in L2, and one GEMM per product per head is larger than four 64-row ones.
int64_t query_block(int64_t t) {
  return t <= kWholeRowTokens ? t : kQueryBlock;
}
constexpr float kLowest = std::numeric_limits<float>::lowest();

// Rows of logits and probabilities are padded to 64 bytes (16 floats): at T = 197 (ViT at 224 px)
// the unaligned row stride cost P^T dO up to 17% and the other per-head products 1-4% (dnnl_sgemm,
// one thread; BENCHMARKS.md, session 23). The padding columns are never read or written.
constexpr int64_t kRowAlign = 16;
int64_t padded_row(int64_t t) {
  return (t + kRowAlign - 1) / kRowAlign * kRowAlign;
}

// Per-thread scratch rows, aligned like the kept probabilities (a std::vector is only 16-byte
// aligned).
class ScratchRows {
 public:
  explicit ScratchRows(int64_t floats)
      : data_(floats > 0 ? static_cast<float*>(
                               std::aligned_alloc(64, size_t(padded_row(floats)) * sizeof(float)))
                         : nullptr) {
    TORCH_CHECK(floats <= 0 || data_, "blocked_attention: out of memory for ", floats,
                " scratch floats");
  }
  ~ScratchRows() { std::free(data_); }
  ScratchRows(const ScratchRows&) = delete;
  ScratchRows& operator=(const ScratchRows&) = delete;
  float* data() const { return data_; }

 private:
  float* data_;
};

// The dropout mask as a pure function of (seed, row, column): a per-row key from splitmix64,
// then a 32-bit integer hash per column (vectorisable); keep when the top 24 bits fall below
// keep * 2^24.
inline uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

struct Dropout {
  float p = 0.0f;        // drop probability (0: off)
  float rescale = 1.0f;  // 1 / (1 - p)
  uint32_t threshold = 0;
  uint64_t seed = 0;
  uint32_t row_key(int64_t row) const { return uint32_t(splitmix64(seed ^ uint64_t(row))); }
};

// out[j] = in[j] * (keep(key, j) ? rescale : 0), j < n.
DATA2VEC_VECTOR_CLONES
void apply_dropout(const float* in, float* out, int64_t n, uint32_t key, uint32_t threshold,
                   float rescale) {
  for (int64_t j = 0; j < n; ++j) {
    uint32_t h = key ^ (uint32_t(j) * 0x9e3779b9u);
    h ^= h >> 16;
    h *= 0x7feb352du;
    h ^= h >> 15;
    h *= 0x846ca68bu;
    h ^= h >> 16;
    out[j] = (h >> 8) < threshold ? in[j] * rescale : 0.0f;
  }
}

// s[j] + bias[j], then padded keys -> lowest; either pointer may be null. The null tests stay
// outside the loops: inside, they make the loads conditional and keep the loop scalar.
DATA2VEC_VECTOR_CLONES
void add_bias_and_padding(float* s, const float* bias, const uint8_t* pad, int64_t t) {
  if (bias != nullptr) {
    for (int64_t j = 0; j < t; ++j) s[j] += bias[j];
  }
  if (pad != nullptr) {
    for (int64_t j = 0; j < t; ++j) s[j] = pad[j] ? kLowest : s[j];
  }
}

using vec::Float8;
using vec::kLanes;
using vec::load8;

__attribute__((always_inline)) inline float row_max(const float* s, int64_t t) {
  float max = kLowest;
  int64_t j = 0;
  if (t >= kLanes) {
    Float8 lanes, x;
    load8(lanes, s);
    for (j = kLanes; j + kLanes <= t; j += kLanes) {
      load8(x, s + j);
      lanes = x > lanes ? x : lanes;
    }
    for (int64_t l = 0; l < kLanes; ++l) max = lanes[l] > max ? lanes[l] : max;
  }
  for (; j < t; ++j) max = s[j] > max ? s[j] : max;
  return max;
}

// s[j] = exp(s[j] - max); returns the sum of the exponentials. The exponentials go in a loop of
// their own, which the AVX512 clone runs 16 wide (summing in the same loop tied it to the eight
// lanes of the sum); the sum then re-reads the row from L1.
__attribute__((always_inline)) inline float exp_and_sum(float* s, float max, int64_t t) {
  for (int64_t j = 0; j < t; ++j) s[j] = vec::exp(s[j] - max);
  Float8 lanes = {}, e;
  int64_t j = 0;
  for (; j + kLanes <= t; j += kLanes) {
    load8(e, s + j);
    lanes += e;
  }
  float sum = 0.0f;
  for (; j < t; ++j) sum += s[j];
  for (int64_t l = 0; l < kLanes; ++l) sum += lanes[l];
  return sum;
}

// One row of logits s[T] -> probabilities, in place: + bias row, padded keys -> lowest, softmax.
// Keeps the row's max and 1 / sum of exponentials in stats[0..1] (not the log-sum-exp: for a fully
// padded row max + log(T) rounds back to fp32's lowest).
DATA2VEC_WIDE_VECTOR_CLONES
void softmax_row(float* s, const float* bias, const uint8_t* pad, int64_t t, float* stats) {
  add_bias_and_padding(s, bias, pad, t);
  const float max = row_max(s, t);
  const float inv = 1.0f / exp_and_sum(s, max, t);
  for (int64_t j = 0; j < t; ++j) s[j] *= inv;
  stats[0] = max;
  stats[1] = inv;
}

// Backward's recomputation of one row of probabilities from the saved max and 1 / sum.
DATA2VEC_WIDE_VECTOR_CLONES
void probs_row(float* s, const float* bias, const uint8_t* pad, const float* stats, int64_t t) {
  const float max = stats[0], inv = stats[1];
  add_bias_and_padding(s, bias, pad, t);
  for (int64_t j = 0; j < t; ++j) s[j] = vec::exp(s[j] - max) * inv;
}

// ds[j] = p[j] * (dp[j] - delta), in place in dp.
DATA2VEC_VECTOR_CLONES
void softmax_backward_row(const float* p, float* dp, float delta, int64_t t) {
  for (int64_t j = 0; j < t; ++j) dp[j] = p[j] * (dp[j] - delta);
}

// Pointers and strides shared by forward and backward.
struct Problem {
  int64_t b = 0, t = 0, h = 0, d = 0, dh = 0;
  int64_t ldp = 0;              // row stride of logits and probabilities: T padded to 64 bytes
  const float* qkv = nullptr;   // [B,T,3D]
  const float* bias = nullptr;  // [H,T,T] (bias_batch_stride 0) or [B,H,T,T]; null: none
  int64_t bias_batch_stride = 0;
  const uint8_t* pad = nullptr;  // [B,T]; null: none
  float* probs = nullptr;        // [B,H,T,ldp] kept by forward for backward; null: recomputed
  Dropout dropout;
  GemmLibrary library = GemmLibrary::kTorch;

  // Row-major C[m,n] = beta C + op(A) op(B) through the chosen library (nn/gemm.h). The tiles
  // are strided views of the packed [B,T,3D] / [B,T,D] tensors, handed over as they are (a row
  // stride is a leading dimension): at the short sequences of data2vec 2.0 (T = 11 kept tokens
  // of 28x28 images) a tile is a few thousand multiply-adds, and a tensor op per tile (wrapping
  // the storage, dispatching mm_out) cost several times the product itself.
  void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a,
            int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) const {
    sgemm(library, trans_a, trans_b, m, n, k, a, lda, b, ldb, beta, c, ldc);
  }

  const float* q(int64_t bi, int64_t hi) const { return qkv + bi * t * 3 * d + hi * dh; }
  const float* k(int64_t bi, int64_t hi) const { return q(bi, hi) + d; }
  const float* v(int64_t bi, int64_t hi) const { return q(bi, hi) + 2 * d; }
  const float* bias_row(int64_t bi, int64_t hi, int64_t i) const {
    return bias ? bias + bi * bias_batch_stride + (hi * t + i) * t : nullptr;
  }
  const uint8_t* pad_row(int64_t bi) const { return pad ? pad + bi * t : nullptr; }
  int64_t row(int64_t bi, int64_t hi, int64_t i) const { return (bi * h + hi) * t + i; }
  // Rows i.. of the kept probabilities of head hi of example bi.
  float* probs_rows(int64_t bi, int64_t hi, int64_t i) const {
    return probs + row(bi, hi, i) * ldp;
  }
};

Problem make_problem(const torch::Tensor& qkv, int64_t num_heads, const torch::Tensor& bias,
                     const torch::Tensor& pad, GemmLibrary library) {
  Problem p;
  p.library = library;
  p.b = qkv.size(0), p.t = qkv.size(1), p.d = qkv.size(2) / 3, p.h = num_heads;
  p.dh = p.d / num_heads;
  p.ldp = padded_row(p.t);
  p.qkv = qkv.data_ptr<float>();
  if (bias.numel() > 0) {
    p.bias = bias.data_ptr<float>();
    p.bias_batch_stride = bias.dim() == 4 && bias.size(0) > 1 ? p.h * p.t * p.t : 0;
  }
  if (pad.numel() > 0) p.pad = reinterpret_cast<const uint8_t*>(pad.data_ptr<bool>());
  return p;
}

// Forward: out [B,T,D], the softmax statistics of every row of logits, stats [B,H,T,2], and,
// when p.probs is set, the probabilities (before dropout).
void attention_forward(const Problem& p, float* out, float* stats) {
  const int64_t t = p.t, ldp = p.ldp, bq = query_block(t);
  const bool scratch = !p.probs || p.dropout.p > 0;  // S lives in the kept probabilities if any
  at::parallel_for(0, p.b * p.h, 1, [&](int64_t begin, int64_t end) {
    ScratchRows s(scratch ? bq * ldp : 0);  // [Bq,ldp]
    for (int64_t task = begin; task < end; ++task) {
      const int64_t bi = task / p.h, hi = task % p.h;
      for (int64_t i0 = 0; i0 < t; i0 += bq) {
        const int64_t m = std::min(bq, t - i0);
        float* probs = p.probs ? p.probs_rows(bi, hi, i0) : s.data();  // [m,ldp]
        p.gemm(false, true, m, t, p.dh, p.q(bi, hi) + i0 * 3 * p.d, 3 * p.d, p.k(bi, hi), 3 * p.d,
               0.0f, probs, ldp);  // S = Q_blk K^T
        for (int64_t r = 0; r < m; ++r) {
          const int64_t i = i0 + r;
          softmax_row(probs + r * ldp, p.bias_row(bi, hi, i), p.pad_row(bi), t,
                      stats + 2 * p.row(bi, hi, i));
        }
        const float* used = probs;  // the probabilities V is multiplied by
        if (p.dropout.p > 0) {
          for (int64_t r = 0; r < m; ++r)
            apply_dropout(probs + r * ldp, s.data() + r * ldp, t,
                          p.dropout.row_key(p.row(bi, hi, i0 + r)), p.dropout.threshold,
                          p.dropout.rescale);
          used = s.data();
        }
        p.gemm(false, false, m, p.dh, t, used, ldp, p.v(bi, hi), 3 * p.d, 0.0f,
               out + (bi * t + i0) * p.d + hi * p.dh, p.d);  // O_blk = P V
      }
    }
  });
}

// Backward: d_qkv [B,T,3D] (every element written) and, when d_bias is given, the logit
// gradient summed into d_bias (shape of the bias; zero-initialised by the caller).
void attention_backward(const Problem& p, const float* stats, const float* d_out, float* d_qkv,
                        float* d_bias) {
  const int64_t t = p.t, ldp = p.ldp, d = p.d, dh = p.dh, bq = query_block(t);
  // A shared [H,T,T] bias gathers the gradient of every batch element: one buffer per thread,
  // summed at the end. A [B,H,T,T] bias has one (b, h) task per slice.
  const bool shared_bias = d_bias && p.bias_batch_stride == 0;
  const int64_t bias_numel = p.h * t * t;
  std::vector<std::vector<float>> bias_partials(shared_bias ? size_t(at::get_num_threads()) : 0);
  at::parallel_for(0, p.b * p.h, 1, [&](int64_t begin, int64_t end) {
    ScratchRows s(p.probs ? 0 : bq * ldp), dp(bq * ldp);  // [Bq,ldp]
    ScratchRows dropped(p.dropout.p > 0 ? bq * ldp : 0);  // [Bq,ldp]
    float* bias_grad = nullptr;
    if (shared_bias) {
      auto& partial = bias_partials[size_t(at::get_thread_num())];
      if (partial.empty()) partial.assign(size_t(bias_numel), 0.0f);
      bias_grad = partial.data();
    }
    for (int64_t task = begin; task < end; ++task) {
      const int64_t bi = task / p.h, hi = task % p.h;
      const float* q = p.q(bi, hi);
      float* dq = d_qkv + bi * t * 3 * d + hi * dh;
      float* dk = dq + d;
      float* dv = dq + 2 * d;
      float* task_bias_grad = !d_bias       ? nullptr
                              : shared_bias ? bias_grad
                                            : d_bias + bi * bias_numel;
      for (int64_t i0 = 0; i0 < t; i0 += bq) {
        const int64_t m = std::min(bq, t - i0);
        const float beta = i0 == 0 ? 0.0f : 1.0f;  // dK, dV: first block writes, others add
        const float* d_out_blk = d_out + (bi * t + i0) * d + hi * dh;
        const float* probs = s.data();  // [m,ldp]: kept by forward, or recomputed from S
        if (p.probs) {
          probs = p.probs_rows(bi, hi, i0);
        } else {
          p.gemm(false, true, m, t, dh, q + i0 * 3 * d, 3 * d, p.k(bi, hi), 3 * d, 0.0f, s.data(),
                 ldp);  // S
          for (int64_t r = 0; r < m; ++r)
            probs_row(s.data() + r * ldp, p.bias_row(bi, hi, i0 + r), p.pad_row(bi),
                      stats + 2 * p.row(bi, hi, i0 + r), t);
        }
        p.gemm(false, true, m, t, dh, d_out_blk, d, p.v(bi, hi), 3 * d, 0.0f, dp.data(),
               ldp);                  // dP' = dO V^T (gradient of the dropped probabilities)
        const float* p_used = probs;  // the probabilities V was multiplied by
        if (p.dropout.p > 0) {
          for (int64_t r = 0; r < m; ++r) {
            const auto key = p.dropout.row_key(p.row(bi, hi, i0 + r));
            apply_dropout(probs + r * ldp, dropped.data() + r * ldp, t, key, p.dropout.threshold,
                          p.dropout.rescale);
            apply_dropout(dp.data() + r * ldp, dp.data() + r * ldp, t, key, p.dropout.threshold,
                          p.dropout.rescale);
          }
          p_used = dropped.data();
        }
        p.gemm(true, false, t, dh, m, p_used, ldp, d_out_blk, d, beta, dv, 3 * d);  // dV += P'^T dO
        for (int64_t r = 0; r < m; ++r) {
          // delta_i = sum_j P_ij dP_ij (= dO_i . O_i) from the two rows in cache: the head's
          // strided rows of O and dO cost more to fetch than the longer dot product.
          const float* p_row = probs + r * ldp;
          float* dp_row = dp.data() + r * ldp;
          softmax_backward_row(p_row, dp_row, vec::dot(p_row, dp_row, t), t);
          if (task_bias_grad)
            vec::add_to(task_bias_grad + (hi * t + i0 + r) * t, dp.data() + r * ldp, t);
        }
        p.gemm(false, false, m, dh, t, dp.data(), ldp, p.k(bi, hi), 3 * d, 0.0f, dq + i0 * 3 * d,
               3 * d);  // dQ_blk = dS K
        p.gemm(true, false, t, dh, m, dp.data(), ldp, q + i0 * 3 * d, 3 * d, beta, dk,
               3 * d);  // dK += dS^T Q_blk
      }
    }
  });
  if (shared_bias) {
    for (const auto& partial : bias_partials)
      if (!partial.empty()) vec::add_to(d_bias, partial.data(), bias_numel);
  }
}

class BlockedAttentionFunction : public torch::autograd::Function<BlockedAttentionFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& qkv,
                               const torch::Tensor& bias, const torch::Tensor& pad,
                               int64_t num_heads, double dropout, int64_t seed, int64_t library,
                               bool keep_probs) {
    auto p = make_problem(qkv, num_heads, bias, pad, GemmLibrary(library));
    set_dropout(p, dropout, seed);
    auto out = torch::empty({p.b, p.t, p.d}, qkv.options());       // [B,T,D]
    auto stats = torch::empty({p.b, p.h, p.t, 2}, qkv.options());  // [B,H,T,2]: max, 1 / sum
    auto probs = torch::empty({keep_probs ? p.b * p.h * p.t * p.ldp : 0}, qkv.options());
    if (keep_probs) p.probs = probs.data_ptr<float>();
    attention_forward(p, out.data_ptr<float>(), stats.data_ptr<float>());
    ctx->save_for_backward({qkv, bias, pad, stats, probs});
    ctx->saved_data["num_heads"] = num_heads;
    ctx->saved_data["dropout"] = dropout;
    ctx->saved_data["seed"] = seed;
    ctx->saved_data["library"] = library;
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto &qkv = saved[0], &bias = saved[1], &pad = saved[2], &stats = saved[3],
               &probs = saved[4];
    auto p = make_problem(qkv, ctx->saved_data["num_heads"].toInt(), bias, pad,
                          GemmLibrary(ctx->saved_data["library"].toInt()));
    if (probs.numel() > 0) p.probs = probs.data_ptr<float>();
    set_dropout(p, ctx->saved_data["dropout"].toDouble(), ctx->saved_data["seed"].toInt());
    const auto d_out = grads[0].contiguous();
    auto d_qkv = torch::empty_like(qkv);
    torch::Tensor d_bias;
    if (bias.numel() > 0 && ctx->needs_input_grad(1)) d_bias = torch::zeros_like(bias);
    attention_backward(p, stats.data_ptr<float>(), d_out.data_ptr<float>(), d_qkv.data_ptr<float>(),
                       d_bias.defined() ? d_bias.data_ptr<float>() : nullptr);
    return {d_qkv,           d_bias,          torch::Tensor(), torch::Tensor(),
            torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }

 private:
  static void set_dropout(Problem& p, double dropout, int64_t seed) {
    if (dropout <= 0.0) return;
    p.dropout.p = float(dropout);
    p.dropout.rescale = float(1.0 / (1.0 - dropout));
    p.dropout.threshold = uint32_t((1.0 - dropout) * double(1u << 24));
    p.dropout.seed = uint64_t(seed);
  }
};

}  // namespace

torch::Tensor blocked_attention(const torch::Tensor& qkv, int64_t num_heads,
                                const torch::Tensor& bias, const torch::Tensor& key_padding_mask,
                                double dropout, GemmLibrary library) {
  TORCH_CHECK(qkv.dim() == 3 && qkv.size(2) % (3 * num_heads) == 0,
              "blocked_attention: qkv must be [B,T,3D] with D divisible by ", num_heads,
              " heads, got ", qkv.sizes());
  TORCH_CHECK(qkv.device().is_cpu() && qkv.scalar_type() == torch::kFloat32,
              "blocked_attention: CPU fp32 only, got ", qkv.device(), " ", qkv.scalar_type(),
              " (use AttentionKernel::kFused elsewhere)");
  TORCH_CHECK(dropout >= 0.0 && dropout < 1.0, "blocked_attention: dropout must be in [0, 1)");
  const auto b = qkv.size(0), t = qkv.size(1);
  // "None" is an empty tensor: 1.13's custom functions do not take undefined inputs.
  auto bias32 = torch::empty({0}, qkv.options());
  if (bias.defined()) {
    TORCH_CHECK((bias.dim() == 3 && bias.size(0) == num_heads) ||
                    (bias.dim() == 4 && (bias.size(0) == 1 || bias.size(0) == b) &&
                     bias.size(1) == num_heads),
                "blocked_attention: bias must be [H,T,T], [1,H,T,T] or [B,H,T,T], got ",
                bias.sizes());
    TORCH_CHECK(bias.size(-1) == t && bias.size(-2) == t, "blocked_attention: bias ", bias.sizes(),
                " does not match T = ", t);
    bias32 = bias.to(torch::kFloat32).contiguous();
  }
  auto pad = torch::empty({0}, torch::kBool);
  if (key_padding_mask.defined()) {
    TORCH_CHECK(key_padding_mask.sizes() == torch::IntArrayRef({b, t}),
                "blocked_attention: key_padding_mask must be [B,T] = [", b, ",", t, "], got ",
                key_padding_mask.sizes());
    pad = key_padding_mask.to(torch::kBool).contiguous();
  }
  int64_t seed = 0;
  if (dropout > 0.0) seed = torch::randint(int64_t(1) << 62, {1}, torch::kLong).item<int64_t>();
  // Backward reuses the probabilities up to kWholeRowTokens (their [B,H,T,T] is what the plain
  // and fused paths keep too) and recomputes them above, where memory stays linear in T.
  const bool needs_grad =
      torch::GradMode::is_enabled() && (qkv.requires_grad() || bias32.requires_grad());
  const bool keep_probs = needs_grad && t <= kWholeRowTokens;
  return BlockedAttentionFunction::apply(qkv.contiguous(), bias32, pad, num_heads, dropout, seed,
                                         int64_t(library), keep_probs);
}

}  // namespace data2vec::nn
