#include "data2vec/nn/gemm.h"

#include <ATen/autocast_mode.h>

#include <climits>
#include <stdexcept>

#ifdef DATA2VEC_HAVE_ONEDNN
#include <dnnl.h>
#endif

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

namespace {

// x [N,in] and weight [out,in] contiguous fp32; bias [out] or empty (1.13's custom functions do
// not take undefined inputs). The library rides along as an int.
class LinearFunction : public torch::autograd::Function<LinearFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& weight, const torch::Tensor& bias,
                               int64_t library) {
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
    ctx->save_for_backward({x, weight});
    ctx->saved_data["library"] = library;
    ctx->saved_data["has_bias"] = bias.numel() > 0;
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &weight = saved[1];
    const auto library = GemmLibrary(ctx->saved_data["library"].toInt());
    const auto rows = x.size(0), in = x.size(1), out = weight.size(0);
    const auto dy = grads[0].contiguous();  // [N,out]
    torch::Tensor dx, dw, db;
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
    if (ctx->saved_data["has_bias"].toBool() && ctx->needs_input_grad(2)) db = dy.sum(0);
    return {dx, dw, db, torch::Tensor()};
  }
};

}  // namespace

torch::Tensor linear(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                     GemmLibrary library) {
  const bool own = library == GemmLibrary::kOneDnn && have_onednn_gemm() && x.device().is_cpu() &&
                   x.scalar_type() == torch::kFloat32 && weight.scalar_type() == torch::kFloat32 &&
                   (!bias.defined() || bias.scalar_type() == torch::kFloat32) && x.dim() >= 1 &&
                   x.numel() > 0 && !at::autocast::is_cpu_enabled();
  if (!own) return torch::linear(x, weight, bias);
  const auto in = weight.size(1), out = weight.size(0);
  TORCH_CHECK(x.size(-1) == in, "linear: input ", x.sizes(), " does not match weight ",
              weight.sizes());
  auto out_shape = x.sizes().vec();
  out_shape.back() = out;
  const auto x2 = x.reshape({-1, in}).contiguous();  // a view when x is contiguous
  const auto b = bias.defined() ? bias.contiguous() : torch::empty({0}, weight.options());
  return LinearFunction::apply(x2, weight.contiguous(), b, int64_t(library)).view(out_shape);
}

}  // namespace data2vec::nn
