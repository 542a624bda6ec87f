#include "data2vec/nn/gemm.h"

#include <ATen/Parallel.h>
#include <ATen/autocast_mode.h>

#include <algorithm>
#include <climits>
#include <stdexcept>

#ifdef DATA2VEC_HAVE_ONEDNN
#include <dnnl.h>
#endif

#include "data2vec/nn/gelu.h"
#include "data2vec/nn/torch_version.h"

// The reference BLAS interface (Fortran, LP64), provided by every BLAS: OpenBLAS, MKL, BLIS.
extern "C" void sgemm_(const char* trans_a, const char* trans_b, const int* m, const int* n,
                       const int* k, const float* alpha, const float* a, const int* lda,
                       const float* b, const int* ldb, const float* beta, float* c, const int* ldc);

namespace data2vec::nn {

bool have_onednn_gemm() {
#ifdef DATA2VEC_HAVE_ONEDNN
  return true;
#else
  return false;
#endif
}

GemmLibrary default_gemm_library() {
  return have_onednn_gemm() ? GemmLibrary::kOneDnn : GemmLibrary::kTorch;
}

GemmLibrary parse_gemm_library(const std::string& name) {
  if (name == "auto") return default_gemm_library();
  if (name == "torch") return GemmLibrary::kTorch;
  if (name == "onednn") {
    if (!have_onednn_gemm())
      throw std::invalid_argument(
          "GEMM library 'onednn': this build has no oneDNN (install libdnnl-dev and rebuild)");
    return GemmLibrary::kOneDnn;
  }
  throw std::invalid_argument("GEMM library '" + name + "': expected auto, torch or onednn");
}

std::string to_string(GemmLibrary library) {
  return library == GemmLibrary::kOneDnn ? "onednn" : "torch";
}

void sgemm(GemmLibrary library, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
           const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
           int64_t ldc) {
#ifdef DATA2VEC_HAVE_ONEDNN
  if (library == GemmLibrary::kOneDnn) {
    const auto status = dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', m, n, k, 1.0f, a, lda,
                                   b, ldb, beta, c, ldc);
    TORCH_CHECK(status == dnnl_success, "dnnl_sgemm failed with status ", int(status), " (m ", m,
                ", n ", n, ", k ", k, ")");
    return;
  }
#endif
  TORCH_CHECK(m <= INT_MAX && n <= INT_MAX && k <= INT_MAX && lda <= INT_MAX && ldb <= INT_MAX &&
                  ldc <= INT_MAX,
              "sgemm: a dimension above the BLAS's 32-bit limit (m ", m, ", n ", n, ", k ", k, ")");
  // A row-major matrix is its column-major transpose: C^T = op(B)^T op(A)^T is the call.
  const int M = int(n), N = int(m), K = int(k), LDA = int(ldb), LDB = int(lda), LDC = int(ldc);
  const float alpha = 1.0f;
  sgemm_(trans_b ? "T" : "N", trans_a ? "T" : "N", &M, &N, &K, &alpha, b, &LDA, a, &LDB, &beta, c,
         &LDC);
}

bool cpu_autocast_enabled() {
  // LibTorch 2.4 keyed autocast by device type and deprecated the per-device functions.
#if DATA2VEC_TORCH_AT_LEAST(2, 4)
  return at::autocast::is_autocast_enabled(at::kCPU);
#else
  return at::autocast::is_cpu_enabled();
#endif
}

namespace {

// Whether oneDNN takes a product of these fp32 operands: the library asked for and built in, CPU
// fp32, not empty, outside autocast (whose bf16 casts LibTorch's own ops apply).
bool on_onednn(GemmLibrary library, const torch::Tensor& a, const torch::Tensor& b) {
  return library == GemmLibrary::kOneDnn && have_onednn_gemm() && a.device().is_cpu() &&
         a.scalar_type() == torch::kFloat32 && b.scalar_type() == torch::kFloat32 &&
         a.numel() > 0 && b.numel() > 0 && !cpu_autocast_enabled();
}

// x [N,in] and weight [out,in] contiguous fp32; bias [out] or empty (1.13's custom functions do
// not take undefined inputs). The library and the activation ride along as ints.
class LinearFunction : public torch::autograd::Function<LinearFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& weight, const torch::Tensor& bias,
                               int64_t library, int64_t activation) {
    const auto rows = x.size(0), in = x.size(1), out = weight.size(0);
    torch::Tensor y;
    float beta = 0.0f;
    if (bias.numel() > 0) {  // the bias in place first, then y += x W^T: one pass less than add_
      y = bias.expand({rows, out}).contiguous();
      beta = 1.0f;
    } else {
      y = torch::empty({rows, out}, x.options());
    }
    sgemm(GemmLibrary(library), false, true, rows, out, in, x.data_ptr<float>(), in,
          weight.data_ptr<float>(), in, beta, y.data_ptr<float>(), out);
    ctx->saved_data["library"] = library;
    ctx->saved_data["has_bias"] = bias.numel() > 0;
    ctx->saved_data["activation"] = activation;
    if (Activation(activation) == Activation::kGelu) {
      auto activated = torch::gelu(y);
      ctx->save_for_backward({x, weight, y, activated});
      return activated;
    }
    ctx->save_for_backward({x, weight});
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &weight = saved[1];
    const auto library = GemmLibrary(ctx->saved_data["library"].toInt());
    const auto rows = x.size(0), in = x.size(1), out = weight.size(0);
    torch::Tensor dy, db;  // [N,out], [out]
    if (Activation(ctx->saved_data["activation"].toInt()) == Activation::kGelu) {
      // saved[2], saved[3]: y and gelu(y)
      auto gelu_grad = gelu_backward_from_output(grads[0].contiguous(), saved[2], saved[3]);
      dy = gelu_grad.input;
      db = gelu_grad.column_sums;
    } else {
      dy = grads[0].contiguous();
    }
    torch::Tensor dx, dw;
    if (ctx->needs_input_grad(0)) {  // dx = dy W
      dx = torch::empty({rows, in}, x.options());
      sgemm(library, false, false, rows, in, out, dy.data_ptr<float>(), out,
            weight.data_ptr<float>(), in, 0.0f, dx.data_ptr<float>(), in);
    }
    if (ctx->needs_input_grad(1)) {  // dW = dy^T x
      dw = torch::empty({out, in}, weight.options());
      sgemm(library, true, false, out, in, rows, dy.data_ptr<float>(), out, x.data_ptr<float>(), in,
            0.0f, dw.data_ptr<float>(), in);
    }
    if (!ctx->saved_data["has_bias"].toBool() || !ctx->needs_input_grad(2)) {
      db = torch::Tensor();
    } else if (!db.defined()) {
      db = dy.sum(0);
    }
    return {dx, dw, db, torch::Tensor(), torch::Tensor()};
  }
};

// A [N,r,c] matrix batch as the sgemm operand it already is in memory: row-major (unit column
// stride) or transposed (unit row stride), with its row stride as the leading dimension.
struct Operand {
  const float* data = nullptr;
  int64_t batch_stride = 0, ld = 0;
  bool trans = false;
};

bool row_major(const torch::Tensor& t) {
  return t.stride(2) == 1 && t.stride(1) >= std::max<int64_t>(1, t.size(2));
}

bool is_operand(const torch::Tensor& t) {
  const bool batched = t.size(0) == 1 || t.stride(0) != 0;  // a broadcast batch needs summing
  const bool transposed = t.stride(1) == 1 && t.stride(2) >= std::max<int64_t>(1, t.size(1));
  return batched && (row_major(t) || transposed);
}

Operand operand_of(const torch::Tensor& t) {
  Operand op;
  op.data = t.data_ptr<float>();
  op.batch_stride = t.stride(0);
  op.trans = !row_major(t);
  op.ld = op.trans ? t.stride(2) : t.stride(1);
  return op;
}

class BatchedMatmulFunction : public torch::autograd::Function<BatchedMatmulFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& a,
                               const torch::Tensor& b, int64_t library) {
    const auto n_mat = a.size(0), m = a.size(1), k = a.size(2), n = b.size(2);
    auto out = torch::empty({n_mat, m, n}, a.options());
    const auto lib = GemmLibrary(library);
    const auto A = operand_of(a), B = operand_of(b);
    float* c = out.data_ptr<float>();
    at::parallel_for(0, n_mat, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i)
        sgemm(lib, A.trans, B.trans, m, n, k, A.data + i * A.batch_stride, A.ld,
              B.data + i * B.batch_stride, B.ld, 0.0f, c + i * m * n, n);
    });
    ctx->save_for_backward({a, b});
    ctx->saved_data["library"] = library;
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto &a = saved[0], &b = saved[1];
    const auto lib = GemmLibrary(ctx->saved_data["library"].toInt());
    const auto n_mat = a.size(0), m = a.size(1), k = a.size(2), n = b.size(2);
    const auto dc = grads[0].contiguous();  // [N,m,n]
    const auto A = operand_of(a), B = operand_of(b);
    const float* g = dc.data_ptr<float>();
    torch::Tensor da, db;
    if (ctx->needs_input_grad(0)) da = torch::empty({n_mat, m, k}, a.options());
    if (ctx->needs_input_grad(1)) db = torch::empty({n_mat, k, n}, b.options());
    float* pa = da.defined() ? da.data_ptr<float>() : nullptr;
    float* pb = db.defined() ? db.data_ptr<float>() : nullptr;
    at::parallel_for(0, n_mat, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        if (pa)  // dA = dC op(B)^T
          sgemm(lib, false, !B.trans, m, k, n, g + i * m * n, n, B.data + i * B.batch_stride, B.ld,
                0.0f, pa + i * m * k, k);
        if (pb)  // dB = op(A)^T dC
          sgemm(lib, !A.trans, false, k, n, m, A.data + i * A.batch_stride, A.ld, g + i * m * n, n,
                0.0f, pb + i * k * n, n);
      }
    });
    return {da, db, torch::Tensor()};
  }
};

}  // namespace

torch::Tensor linear(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                     GemmLibrary library, Activation activation) {
  const bool fp32_bias = !bias.defined() || bias.scalar_type() == torch::kFloat32;
  if (!on_onednn(library, x, weight) || !fp32_bias) {
    auto y = torch::linear(x, weight, bias);
    return activation == Activation::kGelu ? torch::gelu(y) : y;
  }
  const auto in = weight.size(1), out = weight.size(0);
  TORCH_CHECK(x.size(-1) == in, "linear: input ", x.sizes(), " does not match weight ",
              weight.sizes());
  auto out_shape = x.sizes().vec();
  out_shape.back() = out;
  const auto x2 = x.reshape({-1, in}).contiguous();  // a view when x is contiguous
  const auto b = bias.defined() ? bias.contiguous() : torch::empty({0}, weight.options());
  return LinearFunction::apply(x2, weight.contiguous(), b, int64_t(library), int64_t(activation))
      .view(out_shape);
}

torch::Tensor batched_matmul(const torch::Tensor& a, const torch::Tensor& b, GemmLibrary library) {
  TORCH_CHECK(a.dim() == 3 && b.dim() == 3 && a.size(0) == b.size(0) && a.size(2) == b.size(1),
              "batched_matmul: expected [N,m,k] and [N,k,n], got ", a.sizes(), " and ", b.sizes());
  if (!on_onednn(library, a, b)) return torch::bmm(a, b);
  return BatchedMatmulFunction::apply(is_operand(a) ? a : a.contiguous(),
                                      is_operand(b) ? b : b.contiguous(), int64_t(library));
}

}  // namespace data2vec::nn
