#include "data2vec/vision/augment.h"

#include <algorithm>
#include <cmath>

namespace data2vec::vision {

ImageTransformOptions fashion_mnist_transform(bool augment) {
  return ImageTransformOptions()
      .image_size(28)
      .channels(1)
      .augment(augment)
      .crop_scale_min(0.35)
      .mean({0.2860})
      .std({0.3530});
}

CropBox center_square(int64_t height, int64_t width) {
  const int64_t side = std::min(height, width);
  return {(height - side) / 2, (width - side) / 2, side, side};
}

CropBox sample_resized_crop(int64_t height, int64_t width, const ImageTransformOptions& o,
                            Rng& rng) {
  TORCH_CHECK(0 < o.crop_scale_min() && o.crop_scale_min() <= o.crop_scale_max() &&
                  o.crop_scale_max() <= 1.0,
              "random resized crop: scale range [", o.crop_scale_min(), ", ", o.crop_scale_max(),
              "] must satisfy 0 < min <= max <= 1");
  TORCH_CHECK(0 < o.crop_ratio_min() && o.crop_ratio_min() <= o.crop_ratio_max(),
              "random resized crop: ratio range [", o.crop_ratio_min(), ", ", o.crop_ratio_max(),
              "] must be positive and ordered");
  const double area = double(height * width);
  const double log_lo = std::log(o.crop_ratio_min()), log_hi = std::log(o.crop_ratio_max());
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target = area * rng.uniform(o.crop_scale_min(), o.crop_scale_max());
    const double ratio = std::exp(rng.uniform(log_lo, log_hi));
    const auto w = int64_t(std::llround(std::sqrt(target * ratio)));
    const auto h = int64_t(std::llround(std::sqrt(target / ratio)));
    if (0 < w && w <= width && 0 < h && h <= height) {
      return {rng.randint(0, height - h), rng.randint(0, width - w), h, w};
    }
  }
  const double in_ratio = double(width) / double(height);
  int64_t w = width, h = height;
  if (in_ratio < o.crop_ratio_min()) {
    h = std::llround(double(w) / o.crop_ratio_min());
  } else if (in_ratio > o.crop_ratio_max()) {
    w = std::llround(double(h) * o.crop_ratio_max());
  }
  return {(height - h) / 2, (width - w) / 2, h, w};
}

torch::Tensor to_float_image(const torch::Tensor& image) {
  TORCH_CHECK(image.scalar_type() == torch::kUInt8, "to_float_image: expected uint8, got ",
              image.scalar_type());
  return image.to(torch::kFloat32).div_(255.0);
}

torch::Tensor resized_crop(const torch::Tensor& image, const CropBox& box, int64_t size) {
  TORCH_CHECK(image.dim() == 3, "resized_crop: expected [C,H,W], got ", image.sizes());
  auto crop = image.slice(1, box.top, box.top + box.height)
                  .slice(2, box.left, box.left + box.width);  // [C,h,w]
  if (box.height == size && box.width == size) return crop.contiguous();
  namespace F = torch::nn::functional;
  return F::interpolate(crop.unsqueeze(0), F::InterpolateFuncOptions()
                                               .size(std::vector<int64_t>{size, size})
                                               .mode(torch::kBilinear)
                                               .align_corners(false))
      .squeeze(0);  // [C,size,size]
}

torch::Tensor hflip(const torch::Tensor& image) {
  return image.flip({-1});
}

torch::Tensor normalize(const torch::Tensor& image, const std::vector<double>& mean,
                        const std::vector<double>& std) {
  const int64_t c = image.size(0);
  auto expand = [c](const std::vector<double>& v, const char* name) {
    TORCH_CHECK(v.size() == 1 || int64_t(v.size()) == c, "normalize: ", name, " has ", v.size(),
                " values for ", c, " channels (give 1 or ", c, ")");
    std::vector<float> out(c);
    for (int64_t i = 0; i < c; ++i) out[i] = float(v.size() == 1 ? v[0] : v[i]);
    return torch::tensor(out).view({c, 1, 1});
  };
  const auto std_t = expand(std, "std");
  TORCH_CHECK((std_t > 0).all().item<bool>(), "normalize: std must be positive");
  return (image - expand(mean, "mean")) / std_t;
}

torch::Tensor transform_image(const torch::Tensor& image, const ImageTransformOptions& options,
                              uint64_t seed) {
  TORCH_CHECK(image.dim() == 3 && (image.size(0) == 1 || image.size(0) == 3),
              "transform_image: expected uint8 [C,H,W] with C = 1 or 3, got ", image.sizes());
  TORCH_CHECK(options.channels() == 1 || options.channels() == 3,
              "transform_image: channels must be 1 or 3, got ", options.channels());
  auto x = to_float_image(image);  // [C,H,W]
  if (x.size(0) != options.channels()) {
    // 3 -> 1: ITU-R 601 luma, as PIL's convert("L"); 1 -> 3: repeat.
    x = options.channels() == 1 ? (x[0] * 0.299 + x[1] * 0.587 + x[2] * 0.114).unsqueeze(0)
                                : x.expand({3, -1, -1});
  }
  const int64_t h = x.size(1), w = x.size(2);
  if (options.augment()) {
    Rng rng(seed);
    x = resized_crop(x, sample_resized_crop(h, w, options, rng), options.image_size());
    if (rng.coin(options.hflip())) x = hflip(x);
  } else {
    x = resized_crop(x, center_square(h, w), options.image_size());
  }
  return normalize(x, options.mean(), options.std()).contiguous();
}

}  // namespace data2vec::vision
