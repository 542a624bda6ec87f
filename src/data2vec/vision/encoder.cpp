#include "data2vec/vision/encoder.h"

#include <cmath>
#include <map>
#include <sstream>

#include "data2vec/core/masking.h"
#include "data2vec/nn/layer_norm.h"

namespace data2vec::vision {

BlockMaskOptions VisionEncoderOptions::block_mask_options() const {
  return BlockMaskOptions()
      .mask_ratio(mask_ratio())
      .min_patches(min_mask_patches())
      .min_aspect(min_aspect())
      .max_aspect(max_aspect());
}

namespace {

VisionEncoderOptions sized(int64_t depth, int64_t dim, int64_t mlp_dim, int64_t heads) {
  return VisionEncoderOptions().depth(depth).dim(dim).mlp_dim(mlp_dim).num_heads(heads);
}

const std::map<std::string, VisionEncoderOptions>& presets() {
  static const std::map<std::string, VisionEncoderOptions> table = {
      {"tiny", sized(12, 192, 768, 3)},
      {"small", sized(12, 384, 1536, 6)},
      {"base", sized(12, 768, 3072, 12)},
      {"large", sized(24, 1024, 4096, 16)},
      // 28x28 grey images, patch 4 -> 7x7 grid, T = 50. Width 192 / 3 heads of 64 as ViT-tiny,
      // but 6 layers: data2vec averages the top 6 block outputs, and 6 is the smallest depth
      // where those are all the layers without the targets being a shallow net's features.
      // Mask blocks scaled to the grid: max(1, round(16 * 49 / 196)) = 4 patches.
      {"fmnist-tiny",
       sized(6, 192, 768, 3).image_size(28).patch_size(4).in_channels(1).min_mask_patches(4)},
      // A third of fmnist-tiny's compute per step: three times the steps in a CPU budget.
      {"fmnist-mini",
       sized(4, 128, 512, 4).image_size(28).patch_size(4).in_channels(1).min_mask_patches(4)},
  };
  return table;
}

// PyTorch's nn.init.trunc_normal_(t, std=std, a=-2, b=2): a normal of mean 0 and `std` cut at
// the ABSOLUTE range [-2, 2] (inverse-CDF sampling, then a clamp, as torch/nn/init.py does).
// This is the init data2vec's references run: fairseq's data2vec_vision.py calls
// nn.init.trunc_normal_(w, std=0.02) and timm's trunc_normal_ has the same absolute defaults;
// Hugging Face's Data2VecVision _init_weights draws normal_(std=initializer_range) uncut. At
// std 0.02 the cut sits at +-100 std and never binds: the weights are N(0, 0.02^2), not a
// normal cut at +-2 std (std 0.88 x 0.02; the TF / JAX ViT convention, which is not meant here).
void trunc_normal_(torch::Tensor t, double std, double a = -2.0, double b = 2.0) {
  torch::NoGradGuard no_grad;
  const auto cdf = [](double x) { return 0.5 * (1.0 + std::erf(x / std::sqrt(2.0))); };
  const double lo = cdf(a / std), hi = cdf(b / std);
  t.uniform_(2.0 * lo - 1.0, 2.0 * hi - 1.0).erfinv_().mul_(std * std::sqrt(2.0));
  t.clamp_(a, b);
}

torch::Tensor pick_block(const nn::BlockOutput& out) {
  return out.x;
}
torch::Tensor pick_ffn(const nn::BlockOutput& out) {
  return out.ffn;
}

}  // namespace

std::vector<std::string> vision_preset_names() {
  std::vector<std::string> names;
  for (const auto& [name, options] : presets()) names.push_back(name);
  return names;
}

VisionEncoderOptions vision_preset(const std::string& name) {
  const auto it = presets().find(name);
  if (it == presets().end()) {
    std::ostringstream known;
    for (const auto& n : vision_preset_names()) known << " " << n;
    TORCH_CHECK(false, "unknown vision preset '", name, "'; known presets:", known.str());
  }
  return it->second;
}

PatchEmbeddingsImpl::PatchEmbeddingsImpl(int64_t in_channels, int64_t dim, int64_t patch_size) {
  projection = register_module(
      "projection",
      torch::nn::Conv2d(torch::nn::Conv2dOptions(in_channels, dim, patch_size).stride(patch_size)));
}

torch::Tensor PatchEmbeddingsImpl::forward(const torch::Tensor& pixels) {
  return projection(pixels).flatten(2).transpose(1, 2);  // [B,D,G,G] -> [B,N,D]
}

VisionEmbeddingsImpl::VisionEmbeddingsImpl(const VisionEncoderOptions& o) {
  cls_token = register_parameter("cls_token", torch::zeros({1, 1, o.dim()}));
  if (o.use_mask_token()) {
    mask_token = register_parameter("mask_token", torch::zeros({1, 1, o.dim()}));
  }
  patch_embeddings = register_module("patch_embeddings",
                                     PatchEmbeddings(o.in_channels(), o.dim(), o.patch_size()));
  if (o.absolute_position_embeddings()) {
    position_embeddings =
        register_parameter("position_embeddings", torch::zeros({1, 1 + o.num_patches(), o.dim()}));
  }
}

VisionEmbeddingsOutput VisionEmbeddingsImpl::forward(const torch::Tensor& pixels,
                                                     const torch::Tensor& patch_mask) {
  // The residual stream stays in the parameters' dtype: under CPU bf16 autocast the conv returns
  // bf16, and LibTorch 1.13's layer norm rejects bf16 input with fp32 weights. Matmuls inside the
  // blocks still autocast to bf16.
  const auto patches = patch_embeddings(pixels).to(cls_token.scalar_type());  // [B,N,D]
  const auto b = patches.size(0);
  const auto cls = cls_token.expand({b, 1, -1});     // [B,1,D]
  auto with_positions = [&](torch::Tensor tokens) {  // [B,1+N,D]
    return position_embeddings.defined() ? tokens + position_embeddings : tokens;
  };
  VisionEmbeddingsOutput out;
  out.local = with_positions(torch::cat({cls, patches}, 1));  // [B,1+N,D]
  if (!patch_mask.defined()) {
    out.tokens = out.local;
    return out;
  }
  TORCH_CHECK(mask_token.defined(),
              "vision encoder: asked to mask patches, but this encoder has no mask token "
              "(HF use_mask_token = false)");
  const auto masked = torch::where(patch_mask.unsqueeze(-1), mask_token,
                                   patches);                  // [B,N,D]
  out.tokens = with_positions(torch::cat({cls, masked}, 1));  // [B,1+N,D]
  return out;
}

torch::Tensor relative_position_index(int64_t grid_h, int64_t grid_w) {
  const int64_t n = grid_h * grid_w;
  const int64_t num_distances = (2 * grid_h - 1) * (2 * grid_w - 1) + 3;
  auto index = torch::empty({n + 1, n + 1}, torch::kLong);  // [T,T]
  auto a = index.accessor<int64_t, 2>();
  for (int64_t q = 0; q < n; ++q) {
    for (int64_t k = 0; k < n; ++k) {
      const int64_t dh = q / grid_w - k / grid_w + grid_h - 1;  // in [0, 2G_h-2]
      const int64_t dw = q % grid_w - k % grid_w + grid_w - 1;  // in [0, 2G_w-2]
      a[q + 1][k + 1] = dh * (2 * grid_w - 1) + dw;
    }
  }
  for (int64_t t = 0; t <= n; ++t) {
    a[0][t] = num_distances - 3;  // cls -> token
    a[t][0] = num_distances - 2;  // token -> cls
  }
  a[0][0] = num_distances - 1;  // cls -> cls
  return index;
}

RelativePositionBiasImpl::RelativePositionBiasImpl(int64_t grid_h, int64_t grid_w,
                                                   int64_t num_heads) {
  const int64_t num_distances = (2 * grid_h - 1) * (2 * grid_w - 1) + 3;
  relative_position_bias_table =
      register_parameter("relative_position_bias_table", torch::zeros({num_distances, num_heads}));
  relative_position_index =
      register_buffer("relative_position_index", vision::relative_position_index(grid_h, grid_w));
}

torch::Tensor RelativePositionBiasImpl::forward_kept(const torch::Tensor& ids_keep) {
  const auto rows = ids_keep.size(0), kept = ids_keep.size(1);
  const auto index = relative_position_index.index(
      {ids_keep.unsqueeze(2), ids_keep.unsqueeze(1)});  // [R,Tk,Tk] rows into the table
  return relative_position_bias_table.index_select(0, index.reshape({-1}))
      .view({rows, kept, kept, -1})
      .permute({0, 3, 1, 2})
      .contiguous();  // [R,Hd,Tk,Tk]
}

torch::Tensor RelativePositionBiasImpl::forward() {
  const auto t = relative_position_index.size(0);
  return relative_position_bias_table.index_select(0, relative_position_index.view({-1}))
      .view({t, t, -1})
      .permute({2, 0, 1})
      .contiguous();  // [Hd,T,T]
}

VisionTransformerImpl::VisionTransformerImpl(const VisionEncoderOptions& o) {
  const auto g = o.grid_size();
  biases_of_layer.assign(size_t(o.depth()), {});
  if (o.shared_relative_position_bias()) {
    position_biases.push_back(
        register_module("relative_position_bias", RelativePositionBias(g, g, o.num_heads())));
    for (auto& tables : biases_of_layer) tables.push_back(0);
  }
  if (o.layer_relative_position_bias()) {
    auto list = register_module("layer_relative_position_bias", torch::nn::ModuleList());
    for (int64_t i = 0; i < o.depth(); ++i) {
      biases_of_layer[size_t(i)].push_back(position_biases.size());
      position_biases.push_back(RelativePositionBias(g, g, o.num_heads()));
      list->push_back(position_biases.back());
    }
  }
  auto layer_list = register_module("layer", torch::nn::ModuleList());
  for (int64_t i = 0; i < o.depth(); ++i) {
    layers.push_back(nn::PreNormBlock(nn::BlockOptions(o.dim(), o.num_heads(), o.mlp_dim())
                                          .layer_norm_eps(o.layer_norm_eps())
                                          .layer_scale_init(o.layer_scale_init())
                                          .key_bias(false)
                                          .dropout(o.dropout())
                                          .attention_dropout(o.attention_dropout())
                                          .gemm(o.gemm())));
    layer_list->push_back(layers.back());
  }
  layer_result_ = o.layer_result() == LayerResultKind::kBlock ? &pick_block : &pick_ffn;
}

namespace {

// The logit bias of one layer: the sum of its tables' biases (undefined when it has none).
torch::Tensor layer_bias(const std::vector<torch::Tensor>& biases,
                         const std::vector<size_t>& tables) {
  torch::Tensor sum;
  for (const auto table : tables) sum = sum.defined() ? sum + biases[table] : biases[table];
  return sum;
}

}  // namespace

torch::Tensor VisionTransformerImpl::forward(torch::Tensor x,
                                             std::vector<torch::Tensor>& layer_results) {
  std::vector<torch::Tensor> biases;  // one [Hd,T,T] per table
  for (auto& bias : position_biases) biases.push_back(bias->forward());
  for (size_t i = 0; i < layers.size(); ++i) {
    const auto block =
        layers[i]->forward(x, layer_bias(biases, biases_of_layer[i]), /*key_padding_mask=*/{});
    x = block.x;  // [B,T,D]
    layer_results.push_back(layer_result_(block));
  }
  return x;
}

torch::Tensor VisionTransformerImpl::forward_kept(torch::Tensor x, const torch::Tensor& ids_keep,
                                                  std::vector<torch::Tensor>& layer_results) {
  std::vector<torch::Tensor> biases;  // one [R,Hd,Tk,Tk] per table
  for (auto& bias : position_biases) biases.push_back(bias->forward_kept(ids_keep));
  for (size_t i = 0; i < layers.size(); ++i) {
    const auto block =
        layers[i]->forward(x, layer_bias(biases, biases_of_layer[i]), /*key_padding_mask=*/{});
    x = block.x;  // [R,Tk,D]
    layer_results.push_back(layer_result_(block));
  }
  return x;
}

VisionEncoderImpl::VisionEncoderImpl(const VisionEncoderOptions& options) : options_(options) {
  const auto& o = options_;
  TORCH_CHECK(o.patch_size() > 0 && o.image_size() % o.patch_size() == 0,
              "vision encoder: image_size ", o.image_size(), " must be a multiple of patch_size ",
              o.patch_size());
  TORCH_CHECK(o.dim() % o.num_heads() == 0, "vision encoder: dim ", o.dim(),
              " must divide into num_heads ", o.num_heads());
  // Fails early (not at the first batch) when the mask blocks do not fit the grid.
  block_mask_count(o.num_patches(), o.mask_ratio());
  TORCH_CHECK(o.min_mask_patches() >= 1 &&
                  o.min_mask_patches() <= block_mask_count(o.num_patches(), o.mask_ratio()),
              "vision encoder: min_mask_patches = ", o.min_mask_patches(), " exceeds the ",
              block_mask_count(o.num_patches(), o.mask_ratio()), " patches masked on a ",
              o.grid_size(), "x", o.grid_size(), " grid; use max(1, round(16 * N / 196)) = ",
              scaled_min_mask_patches(o.num_patches()));

  embeddings = register_module("embeddings", VisionEmbeddings(o));
  encoder = register_module("encoder", VisionTransformer(o));
  const auto norm_options = torch::nn::LayerNormOptions({o.dim()}).eps(o.layer_norm_eps());
  if (!o.mean_pooling())
    layernorm = register_module("layernorm", torch::nn::LayerNorm(norm_options));
  if (o.pooler() && o.mean_pooling()) {
    auto pooler = register_module("pooler", std::make_shared<torch::nn::Module>());
    pooler_layernorm = pooler->register_module("layernorm", torch::nn::LayerNorm(norm_options));
  }

  // BEiT's init as fairseq's data2vec_vision.py runs it: trunc_normal_ 0.02 (above) for every
  // Linear / Conv2d weight and the two tokens, zero biases, LayerNorms at (1, 0), position tables
  // at zero; then the residual output projections of layer l (1-based) are divided by
  // sqrt(2 l) so deep stacks start near the identity.
  for (auto& module : modules(/*include_self=*/false)) {
    if (auto* linear = module->as<torch::nn::Linear>()) {
      trunc_normal_(linear->weight, 0.02);
      if (linear->bias.defined()) torch::nn::init::zeros_(linear->bias);
    } else if (auto* conv = module->as<torch::nn::Conv2d>()) {
      trunc_normal_(conv->weight, 0.02);
      if (conv->bias.defined()) torch::nn::init::zeros_(conv->bias);
    }
  }
  trunc_normal_(embeddings->cls_token, 0.02);
  if (embeddings->mask_token.defined()) trunc_normal_(embeddings->mask_token, 0.02);
  if (embeddings->position_embeddings.defined()) {
    trunc_normal_(embeddings->position_embeddings, 0.02);
  }
  torch::NoGradGuard no_grad;
  if (o.sincos_position_embeddings()) {
    TORCH_CHECK(embeddings->position_embeddings.defined(),
                "vision encoder: sincos_position_embeddings needs absolute_position_embeddings");
    auto& table = embeddings->position_embeddings;  // [1,1+N,D]; CLS (row 0) gets no position
    table.zero_();
    table[0].narrow(0, 1, o.num_patches()).copy_(sincos_position_table(o.grid_size(), o.dim()));
    table.set_requires_grad(false);
  }
  if (!o.depth_scaled_init()) return;
  for (size_t i = 0; i < encoder->layers.size(); ++i) {
    const double rescale = 1.0 / std::sqrt(2.0 * double(i + 1));
    encoder->layers[i]->attention->output->weight.mul_(rescale);
    encoder->layers[i]->feed_forward->fc2->weight.mul_(rescale);
  }
}

torch::Tensor sincos_position_table(int64_t grid, int64_t dim) {
  TORCH_CHECK(grid > 0 && dim > 0 && dim % 4 == 0, "sincos_position_table: dim ", dim,
              " must be a positive multiple of 4 (grid ", grid, ")");
  const int64_t quarter = dim / 4;
  const auto omega =
      torch::pow(10000.0, -torch::arange(quarter, torch::kDouble) / double(quarter));  // [D/4]
  auto encode = [&](const torch::Tensor& position) {  // [N] -> [N, D/2]
    const auto angle = position.unsqueeze(1) * omega.unsqueeze(0);
    return torch::cat({angle.sin(), angle.cos()}, 1);
  };
  const auto index = torch::arange(grid * grid, torch::kDouble);
  const auto row = torch::floor(index / double(grid)), column = index - row * double(grid);
  return torch::cat({encode(column), encode(row)}, 1).to(torch::kFloat);  // [N, D]
}

MaskedInput VisionEncoderImpl::apply_mask(const EncoderInput& input, at::Generator& generator) {
  const auto b = input.source.size(0), g = options_.grid_size();
  const auto patch_mask = block_mask(b, g, g, options_.block_mask_options(), generator);  // [B,N]
  const auto mask = torch::cat({torch::zeros({b, 1}, torch::kBool), patch_mask}, 1);      // [B,1+N]
  return {input, mask.to(input.source.device())};
}

EncoderOutput VisionEncoderImpl::extract_features(const EncoderInput& input,
                                                  const torch::Tensor& mask) {
  const auto& pixels = input.source;  // [B,C,H,W]
  const auto& o = options_;
  TORCH_CHECK(pixels.dim() == 4 && pixels.size(1) == o.in_channels() &&
                  pixels.size(2) == o.image_size() && pixels.size(3) == o.image_size(),
              "vision encoder: expected images [B,", o.in_channels(), ",", o.image_size(), ",",
              o.image_size(), "], got ", pixels.sizes(),
              "; check the dataset's image_size / channels against the encoder preset");
  torch::Tensor patch_mask;  // [B,N]
  if (mask.defined()) {
    TORCH_CHECK(
        mask.dim() == 2 && mask.size(0) == pixels.size(0) && mask.size(1) == 1 + o.num_patches(),
        "vision encoder: mask must be [B, 1 + N] = [", pixels.size(0), ", ", 1 + o.num_patches(),
        "] (CLS column first), got ", mask.sizes());
    patch_mask = mask.slice(1, 1).to(torch::kBool);
  }
  const auto embedded = embeddings->forward(pixels, patch_mask);
  EncoderOutput out;
  out.local_features = embedded.local;  // [B,1+N,D]
  out.block_input = embedded.tokens;
  const auto x = encoder->forward(embedded.tokens, out.layer_results);
  out.x = final_norm(x);  // [B,1+N,D]
  return out;
}

torch::Tensor VisionEncoderImpl::final_norm(const torch::Tensor& x) {
  return layernorm ? nn::layer_norm(x, layernorm) : x;
}

torch::Tensor VisionEncoderImpl::pool(const torch::Tensor& x) {
  if (!options_.mean_pooling()) return x.select(1, 0);  // [B,D]
  const auto mean = x.slice(1, 1).mean(1);              // [B,D]
  return pooler_layernorm ? nn::layer_norm(mean, pooler_layernorm) : mean;
}

torch::Tensor VisionEncoderImpl::v2_mask(const EncoderInput& input, int64_t clones,
                                         at::Generator& generator) {
  const auto rows = input.source.size(0) * clones, g = options_.grid_size();
  const auto patch_mask = inverse_block_mask(rows, g, g,
                                             InverseBlockMaskOptions()
                                                 .mask_ratio(options_.mask_ratio())
                                                 .block_size(options_.inverse_block_size()),
                                             generator);  // [B*M,N]
  const auto mask =
      torch::cat({torch::zeros({rows, 1}, torch::kBool), patch_mask}, 1);  // [B*M,1+N]
  return mask.to(input.source.device());
}

EncoderOutput VisionEncoderImpl::extract_kept_features(const EncoderInput& input,
                                                       const torch::Tensor& ids_keep,
                                                       int64_t clones) {
  const auto& pixels = input.source;  // [B,C,H,W]
  const auto& o = options_;
  TORCH_CHECK(pixels.dim() == 4 && pixels.size(1) == o.in_channels() &&
                  pixels.size(2) == o.image_size() && pixels.size(3) == o.image_size(),
              "vision encoder: expected images [B,", o.in_channels(), ",", o.image_size(), ",",
              o.image_size(), "], got ", pixels.sizes());
  TORCH_CHECK(ids_keep.dim() == 2 && ids_keep.size(0) == pixels.size(0) * clones,
              "vision encoder: ids_keep must be [B*M, Tk] = [", pixels.size(0) * clones,
              ", Tk], got ", ids_keep.sizes());
  EncoderOutput out;
  out.local_features = embeddings->forward(pixels, /*patch_mask=*/{}).local;  // [B,1+N,D], once
  const auto x = gather_copies(out.local_features, ids_keep, clones);         // [B*M,Tk,D]
  out.x = final_norm(encoder->forward_kept(x, ids_keep, out.layer_results));  // [B*M,Tk,D]
  return out;
}

DecoderOptions VisionEncoderImpl::default_decoder_options() const {
  return DecoderOptions()
      .dim(768)
      .kernel(3)
      .groups(16)
      .layers(6)
      .residual(true)
      .grid({options_.grid_size(), options_.grid_size()})
      .gemm(options_.gemm());
}

std::shared_ptr<VisionEncoderImpl> make_vision_encoder(const VisionEncoderOptions& options) {
  return std::make_shared<VisionEncoderImpl>(options);
}

}  // namespace data2vec::vision
