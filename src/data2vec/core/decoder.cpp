#include "data2vec/core/decoder.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include <mutex>

#include "data2vec/nn/gelu.h"
#include "data2vec/nn/layer_norm.h"

namespace data2vec {

DecoderOptions override_decoder_options(DecoderOptions base, int64_t dim, int64_t kernel,
                                        int64_t groups, int64_t layers) {
  if (dim > 0) base.dim(dim);
  if (kernel > 0) base.kernel(kernel);
  if (groups > 0) base.groups(groups);
  if (layers > 0) base.layers(layers);
  return base;
}

torch::Tensor mask_noise(torch::IntArrayRef sizes, double std,
                         const torch::TensorOptions& options) {
  if (!options.device().is_cpu() || options.dtype() != torch::kFloat32)
    return torch::randn(sizes, options) * std;
  constexpr int64_t kChunk = 65536;
  uint64_t seed = 0;
  {
    auto generator = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(generator.mutex());
    seed = generator.get<at::CPUGeneratorImpl>()->random64();
  }
  auto noise = torch::empty(sizes, options);
  auto flat = noise.view({-1});
  const int64_t chunks = (flat.numel() + kChunk - 1) / kChunk;
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      // Distinct, well-mixed seeds per chunk (the golden-ratio step of splitmix64).
      auto chunk_generator =
          at::detail::createCPUGenerator(seed + uint64_t(c) * 0x9e3779b97f4a7c15ull);
      flat.slice(0, c * kChunk, std::min((c + 1) * kChunk, flat.numel()))
          .normal_(0.0, std, chunk_generator);
    }
  });
  return noise;
}

DecoderBlockImpl::DecoderBlockImpl(int64_t in_dim, const DecoderOptions& o) : dim(o.dim()) {
  TORCH_CHECK(o.kernel() >= 1 && o.kernel() % 2 == 1, "decoder: kernel must be odd, got ",
              o.kernel());
  TORCH_CHECK(in_dim % o.groups() == 0 && o.dim() % o.groups() == 0, "decoder: widths ", in_dim,
              " and ", o.dim(), " must divide into ", o.groups(), " groups");
  if (o.grid().empty()) {
    conv =
        torch::nn::AnyModule(torch::nn::Conv1d(torch::nn::Conv1dOptions(in_dim, o.dim(), o.kernel())
                                                   .padding(o.kernel() / 2)
                                                   .groups(o.groups())));
  } else {
    conv =
        torch::nn::AnyModule(torch::nn::Conv2d(torch::nn::Conv2dOptions(in_dim, o.dim(), o.kernel())
                                                   .padding(o.kernel() / 2)
                                                   .groups(o.groups())));
  }
  register_module("conv", conv.ptr());
}

torch::Tensor DecoderBlockImpl::forward(const torch::Tensor& x) {
  auto y = conv.forward(x).movedim(1, -1);  // channels last: [R,T,Dd] or [R,Gh,Gw,Dd]
  y = nn::layer_norm(y, /*weight=*/{}, /*bias=*/{}, 1e-5);
  // nn::gelu: the gradient arriving through movedim is strided differently from y.
  return nn::gelu(y).movedim(-1, 1);  // [R,Dd,...]
}

DecoderImpl::DecoderImpl(int64_t input_dim, const DecoderOptions& options) : options_(options) {
  TORCH_CHECK(options.layers() >= 1, "decoder: needs at least one block, got ", options.layers());
  TORCH_CHECK(options.grid().empty() || options.grid().size() == 2,
              "decoder: grid must be empty (1-D) or {G_h, G_w}, got ", options.grid().size(),
              " sizes");
  auto list = register_module("blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < options.layers(); ++i) {
    blocks.push_back(DecoderBlock(i == 0 ? input_dim : options.dim(), options));
    list->push_back(blocks.back());
  }
  TORCH_CHECK(options.projection_layers() >= 1,
              "decoder: needs at least one projection layer, got ", options.projection_layers());
  // fairseq Decoder1d: a single Linear stays a bare module (proj.weight), several go into a
  // Sequential with GELUs between them (proj.0.weight, proj.2.weight, ...).
  if (options.projection_layers() == 1) {
    proj = register_module("proj", torch::nn::Linear(options.dim(), input_dim));
    return;
  }
  const auto hidden = int64_t(double(options.dim()) * options.projection_ratio());
  torch::nn::Sequential layers(torch::nn::Linear(options.dim(), hidden), torch::nn::GELU());
  for (int64_t i = 1; i + 1 < options.projection_layers(); ++i) {
    layers->push_back(torch::nn::Linear(hidden, hidden));
    layers->push_back(torch::nn::GELU());
  }
  layers->push_back(torch::nn::Linear(hidden, input_dim));
  projection_layers = register_module("proj", layers);
}

torch::Tensor DecoderImpl::forward(const torch::Tensor& x_in, const torch::Tensor& padding_mask) {
  TORCH_CHECK(x_in.dim() == 3, "decoder: expected [R,T,D], got ", x_in.sizes());
  const auto rows = x_in.size(0), time = x_in.size(1);
  torch::Tensor x = x_in.transpose(1, 2);  // [R,D,T]
  torch::Tensor pad;                       // broadcastable to x, true = padding
  const auto& grid = options_.grid();
  if (!grid.empty()) {
    TORCH_CHECK(grid[0] * grid[1] == time, "decoder: ", time, " positions do not fill the ",
                grid[0], "x", grid[1], " grid");
    x = x.reshape({rows, x.size(1), grid[0], grid[1]});  // [R,D,Gh,Gw]
    if (padding_mask.defined()) pad = padding_mask.view({rows, 1, grid[0], grid[1]});
  } else if (padding_mask.defined()) {
    pad = padding_mask.view({rows, 1, time});
  }
  for (size_t i = 0; i < blocks.size(); ++i) {
    const auto input = pad.defined() ? x.masked_fill(pad, 0.0) : x;
    auto y = blocks[i]->forward(input);
    if (options_.residual() && y.size(1) == x.size(1)) y = y + x;
    x = y;
  }
  x = x.flatten(2).transpose(1, 2);  // [R,T,Dd]
  // The linears through nn::linear: on LibTorch's BLAS the projection of the 2.0 demo's 12544
  // decoded positions (64 -> 128) ran at 57 GFLOP/s, 5.3 ms of a 140 ms step.
  if (proj) return nn::linear(x, proj->weight, proj->bias, options_.gemm());  // [R,T,D]
  for (auto& layer : *projection_layers) {
    if (const auto* linear = layer.ptr()->as<torch::nn::Linear>()) {
      x = nn::linear(x, linear->weight, linear->bias, options_.gemm());
    } else {
      x = layer.forward(x);
    }
  }
  return x;  // [R,T,D]
}

}  // namespace data2vec
