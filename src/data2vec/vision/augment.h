// Image transforms of the vision data path: pure tensor functions, the random ones driven by an
// Rng built from the per-sample seed, so (image, options, seed) always gives the same tensor.
//
//   uint8 [C,H,W] -> float [0,1] -> (augment: random resized crop, h-flip | else: centre square
//   crop) -> bilinear resize to image_size -> per-channel (x - mean) / std
#pragma once

#include <torch/torch.h>

#include <vector>

#include "data2vec/vision/rng.h"

namespace data2vec::vision {

struct ImageTransformOptions {
  /// Output side length (square). Default 224.
  TORCH_ARG(int64_t, image_size) = 224;
  /// Channels of the output: 1 (grey) or 3; grey images are repeated to 3. Default 3.
  TORCH_ARG(int64_t, channels) = 3;
  /// Random resized crop + horizontal flip (pretraining); false: centre crop + resize. Default
  /// true.
  TORCH_ARG(bool, augment) = true;
  /// Crop area range as a fraction of the image. Default [0.08, 1] (ImageNet; 28x28 data: 0.35).
  TORCH_ARG(double, crop_scale_min) = 0.08;
  TORCH_ARG(double, crop_scale_max) = 1.0;
  /// Crop aspect ratio range (log-uniform). Default [3/4, 4/3].
  TORCH_ARG(double, crop_ratio_min) = 3.0 / 4.0;
  TORCH_ARG(double, crop_ratio_max) = 4.0 / 3.0;
  /// Probability of a horizontal flip when augmenting. Default 0.5.
  TORCH_ARG(double, hflip) = 0.5;
  /// Per-channel normalisation (one value per output channel, or one for all). Default ImageNet.
  TORCH_ARG(std::vector<double>, mean) = std::vector<double>{0.485, 0.456, 0.406};
  TORCH_ARG(std::vector<double>, std) = std::vector<double>{0.229, 0.224, 0.225};
};

// Fashion-MNIST: 28x28, one channel, mean 0.2860 / std 0.3530 (train split), crop scale >= 0.35
// (a 0.08 crop of a 28x28 image is ~8x8 pixels: too little garment left to predict anything).
ImageTransformOptions fashion_mnist_transform(bool augment);

// A crop rectangle in pixels.
struct CropBox {
  int64_t top = 0, left = 0, height = 0, width = 0;
};

// torchvision's RandomResizedCrop.get_params: up to 10 draws of (area fraction in [scale_min,
// scale_max], log-uniform ratio) that fit in the image, else the centre crop with the ratio
// clamped into range.
CropBox sample_resized_crop(int64_t height, int64_t width, const ImageTransformOptions& options,
                            Rng& rng);

// The largest centred square.
CropBox center_square(int64_t height, int64_t width);

// uint8 [C,H,W] -> float32 [C,H,W] in [0,1].
torch::Tensor to_float_image(const torch::Tensor& image);

// image [C,H,W] float, the crop `box` resized bilinearly (align_corners false) to size x size.
torch::Tensor resized_crop(const torch::Tensor& image, const CropBox& box, int64_t size);

// image [C,H,W] mirrored left-right.
torch::Tensor hflip(const torch::Tensor& image);

// (image [C,H,W] - mean[c]) / std[c]; one value in mean/std applies to every channel.
torch::Tensor normalize(const torch::Tensor& image, const std::vector<double>& mean,
                        const std::vector<double>& std);

// The whole transform: uint8 [C,H,W] (C = 1 or 3) -> float [channels, image_size, image_size].
torch::Tensor transform_image(const torch::Tensor& image, const ImageTransformOptions& options,
                              uint64_t seed);

}  // namespace data2vec::vision
