#include "data2vec/vision/datasets.h"

#include <png.h>
#include <spdlog/spdlog.h>
#include <turbojpeg.h>

#include <algorithm>
#include <cctype>
#include <climits>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>

#include "data2vec/io/files.h"
#include "data2vec/vision/idx.h"

// PNG and JPEG go through libpng and libjpeg-turbo, the decoders Pillow uses, hardened by years
// of OSS-Fuzz: stb_image 2.27 (Debian bookworm) failed fuzz/fuzz_image four times on PNG and JPEG
// (a write past a Huffman table, a memcpy to NULL, a bit buffer shifted by more than its width, a
// 48-s decode of a bomb). stb_image stays for BMP only, the one translation unit compiling it (its
// own code trips -Wextra).
#define STB_IMAGE_IMPLEMENTATION
#define STBI_FAILURE_USERMSG
#define STBI_ONLY_BMP
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-but-set-variable"
#include <stb_image.h>
#pragma GCC diagnostic pop

namespace data2vec::vision {

namespace fs = std::filesystem;

IdxImageDataset::IdxImageDataset(const std::string& images_path, const std::string& labels_path,
                                 const ImageTransformOptions& options, int64_t num_classes)
    : images_path_(images_path), options_(options) {
  auto images = read_idx(images_path);
  TORCH_CHECK(images.dim() == 3 || (images.dim() == 4 && images.size(3) == 3), "IDX images ",
              images_path, ": expected dims [N,H,W] or [N,H,W,3], got ", images.sizes());
  images_ = images.dim() == 3 ? images.unsqueeze(1) : images.permute({0, 3, 1, 2}).contiguous();
  const int64_t n = images_.size(0);
  if (labels_path.empty()) {
    labels_ = torch::full({n}, -1, torch::kLong);
    return;
  }
  auto labels = read_idx(labels_path);
  TORCH_CHECK(labels.dim() == 1 && labels.size(0) == n, "IDX labels ", labels_path, ": dims ",
              labels.sizes(), " do not match the ", n, " images of ", images_path);
  labels_ = labels.to(torch::kLong);
  num_classes_ = num_classes > 0 ? num_classes : n == 0 ? 0 : labels_.max().item<int64_t>() + 1;
  // A label past the classes would silently widen every classifier head (or index past it).
  if (num_classes > 0 && n > 0) {
    const auto bad = (labels_ >= num_classes).nonzero();
    TORCH_CHECK(bad.size(0) == 0, "IDX labels ", labels_path, ": label ",
                labels_[bad[0][0]].item<int64_t>(), " at index ", bad[0][0].item<int64_t>(),
                " is outside the ", num_classes, " classes 0..", num_classes - 1, " (", bad.size(0),
                " such labels)");
  }
}

std::shared_ptr<IdxImageDataset> IdxImageDataset::load_fashion_mnist(const std::string& root,
                                                                     bool train) {
  return load_fashion_mnist(root, train, fashion_mnist_transform(train));
}

std::shared_ptr<IdxImageDataset> IdxImageDataset::load_fashion_mnist(
    const std::string& root, bool train, const ImageTransformOptions& options) {
  const std::string split = train ? "train" : "t10k";
  return std::make_shared<IdxImageDataset>(root + "/" + split + "-images-idx3-ubyte.gz",
                                           root + "/" + split + "-labels-idx1-ubyte.gz", options,
                                           kMnistClasses);
}

Example IdxImageDataset::get(size_t index, uint64_t seed) const {
  TORCH_CHECK(index < size(), "IDX dataset ", images_path_, ": index ", index, " >= size ", size());
  const auto i = int64_t(index);
  return {transform_image(images_[i], options_, seed), labels_[i].item<int64_t>()};
}

std::string IdxImageDataset::describe(size_t index) const {
  return images_path_ + "#" + std::to_string(index);
}

ImageFolderDataset::ImageFolderDataset(const std::string& root,
                                       const ImageTransformOptions& options,
                                       const std::vector<std::string>& classes)
    : options_(options), classes_(classes) {
  TORCH_CHECK(fs::is_directory(root), "image folder ", root,
              ": not a directory (expected root/<class>/<image files>)");
  std::vector<std::string> folders;
  for (const auto& entry : fs::directory_iterator(root)) {
    const auto name = entry.path().filename().string();
    if (entry.is_directory() && name.front() != '.') folders.push_back(name);
  }
  std::sort(folders.begin(), folders.end());
  if (classes_.empty()) {
    classes_ = folders;
    // train/animals/{cat,dog}/ is one class, 'animals', now that class folders are read with
    // their sub-folders: fine for pretraining, not for a classifier, so said.
    if (classes_.size() == 1) {
      spdlog::warn("image folder {}: one class folder only ('{}'): fine to pretrain on, not to "
                   "evaluate a classifier (the layout is root/<class>/<images>)",
                   root, classes_.front());
    }
  }
  for (const auto& folder : folders) {
    if (std::find(classes_.begin(), classes_.end(), folder) != classes_.end()) continue;
    std::string known;
    for (const auto& name : classes_) known += (known.empty() ? "" : ", ") + name;
    TORCH_CHECK(false, "image folder ", root, ": class folder '", folder,
                "' is not one of the training split's classes (", known, ")");
  }
  for (size_t c = 0; c < classes_.size(); ++c) {
    std::vector<std::string> class_files;
    // A held-out split may have no images of a class.
    if (!fs::is_directory(fs::path(root) / classes_[c])) continue;
    // Sub-folders too, as torchvision's ImageFolder reads a class (os.walk, links followed).
    for (const auto& file :
         io::list_files((fs::path(root) / classes_[c]).string(), kImageFileExtensions)) {
      class_files.push_back(file.string());
    }
    for (auto& f : class_files) {
      files_.push_back(std::move(f));
      labels_.push_back(int64_t(c));
    }
  }
  TORCH_CHECK(!files_.empty(), "image folder ", root,
              ": no .png/.jpg/.jpeg/.bmp files in any root/<class>/ sub-folder");
}

namespace {

// A damaged header can declare a huge image that a decoder then decodes in full from a few bytes
// (truncated data decodes as grey or zeros): a 729-byte JPEG declaring 56840x1542 took 48 s and
// 263 MB (found by fuzz/fuzz_image). No format read here packs more than ~8,300 pixels in a byte
// (1-bit PNG through deflate's 1032:1), so a header claiming more is damage; and as Pillow does
// (DecompressionBombError), nothing over 2 x 89,478,485 pixels is decoded.
void refuse_implausible_size(uint64_t width, uint64_t height, size_t file_bytes,
                             const std::string& path) {
  const uint64_t declared = width * height;
  constexpr uint64_t kPixelsPerByte = 16384, kAnySmallImage = uint64_t(1) << 22,
                     kPillowBomb = 2 * uint64_t(89478485);
  if (declared > kPillowBomb ||
      declared > std::max(kAnySmallImage, kPixelsPerByte * uint64_t(file_bytes))) {
    throw data2vec::BadSample("cannot decode image " + path + ": its header declares " +
                              std::to_string(width) + "x" + std::to_string(height) + " pixels in " +
                              std::to_string(file_bytes) +
                              " bytes (a damaged file or a decompression bomb)");
  }
}

// Each decoder returns [H,W,C] uint8 in the file's own colour model: C = 1 (grey) or 3 (RGB), an
// alpha channel dropped (as Pillow's convert("RGB") does).

// Pillow's CMYK JPEG -> RGB, byte for byte: it reads every four-component JPEG as Adobe's
// inverted CMYK (what Photoshop writes; rawmode "CMYK;I"), then converts without a colour
// profile: R = (255 - K) - (255 - K) * C / 255, with C = 255 - stored c and 255 - K = stored k.
torch::Tensor cmyk_to_rgb(const torch::Tensor& stored) {
  const auto pixels = stored.size(0) * stored.size(1);
  auto rgb = torch::empty({stored.size(0), stored.size(1), 3}, torch::kUInt8);
  const uint8_t* in = stored.data_ptr<uint8_t>();
  uint8_t* out = rgb.data_ptr<uint8_t>();
  for (int64_t i = 0; i < pixels; ++i, in += 4, out += 3) {
    const int not_black = in[3];
    for (int c = 0; c < 3; ++c) {
      const int ink = 255 - in[c];
      const int scaled = ink * not_black + 128;  // Pillow's MULDIV255: round(ink * nk / 255)
      const int value = not_black - (((scaled >> 8) + scaled) >> 8);
      out[c] = static_cast<uint8_t>(std::clamp(value, 0, 255));
    }
  }
  return rgb;
}

torch::Tensor decode_jpeg(const std::string& bytes, const std::string& path) {
  std::unique_ptr<void, int (*)(tjhandle)> decoder(tjInitDecompress(), &tjDestroy);
  if (!decoder) throw std::runtime_error("libjpeg-turbo: " + std::string(tjGetErrorStr2(nullptr)));
  auto* data = reinterpret_cast<const unsigned char*>(bytes.data());
  const auto size = static_cast<unsigned long>(bytes.size());
  auto fail = [&] {
    return data2vec::BadSample("cannot decode image " + path +
                               ": corrupt JPEG: " + tjGetErrorStr2(decoder.get()));
  };
  int width = 0, height = 0, subsampling = 0, colorspace = 0;
  if (tjDecompressHeader3(decoder.get(), data, size, &width, &height, &subsampling, &colorspace) !=
      0) {
    throw fail();
  }
  refuse_implausible_size(uint64_t(width), uint64_t(height), bytes.size(), path);
  const bool grey = colorspace == TJCS_GRAY;
  const bool cmyk = colorspace == TJCS_CMYK || colorspace == TJCS_YCCK;  // print-ready photos
  auto image = torch::empty({height, width, grey ? 1 : cmyk ? 4 : 3}, torch::kUInt8);
  // Pillow's defaults (accurate integer DCT, fancy upsampling); a progressive file with an
  // unreasonable number of scans is refused rather than decoded for minutes. A warning about a
  // minor defect (e.g. extraneous bytes before a marker) leaves a whole image, which is kept as
  // Pillow keeps it; a file cut short decodes as grey below the cut, and is refused as Pillow
  // refuses it ("image file is truncated").
  if (tjDecompress2(decoder.get(), data, size, image.data_ptr<uint8_t>(), width, 0, height,
                    grey ? TJPF_GRAY : cmyk ? TJPF_CMYK : TJPF_RGB, TJFLAG_LIMITSCANS) != 0) {
    const std::string message = tjGetErrorStr2(decoder.get());
    if (tjGetErrorCode(decoder.get()) != TJERR_WARNING ||
        message.find("Premature end") != std::string::npos) {
      throw fail();
    }
  }
  return cmyk ? cmyk_to_rgb(image) : image;
}

torch::Tensor decode_png(const std::string& bytes, const std::string& path) {
  png_image png{};
  png.version = PNG_IMAGE_VERSION;
  // libpng frees its state after a failure or a finished read; this covers an early throw.
  std::unique_ptr<png_image, void (*)(png_imagep)> release(&png, &png_image_free);
  auto fail = [&] {
    return data2vec::BadSample("cannot decode image " + path + ": corrupt PNG: " + png.message);
  };
  if (png_image_begin_read_from_memory(&png, bytes.data(), bytes.size()) == 0) throw fail();
  refuse_implausible_size(png.width, png.height, bytes.size(), path);
  // 16-bit samples are sRGB-encoded like 8-bit ones unless a chunk says otherwise; without this
  // flag libpng takes them as linear light and brightens them on the way to 8 bits.
  png.flags |= PNG_IMAGE_FLAG_16BIT_sRGB;
  const bool grey = (png.format & PNG_FORMAT_FLAG_COLOR) == 0;
  png.format = grey ? PNG_FORMAT_GA : PNG_FORMAT_RGBA;  // alpha kept here, dropped below
  const int64_t channels = grey ? 2 : 4;
  auto image = torch::empty({int64_t(png.height), int64_t(png.width), channels}, torch::kUInt8);
  if (png_image_finish_read(&png, nullptr, image.data_ptr<uint8_t>(), 0, nullptr) == 0) {
    throw fail();
  }
  return image.narrow(2, 0, channels - 1);
}

torch::Tensor decode_bmp(const std::string& bytes, const std::string& path) {
  auto* data = reinterpret_cast<const stbi_uc*>(bytes.data());
  int width = 0, height = 0, channels = 0;
  if (stbi_info_from_memory(data, int(bytes.size()), &width, &height, &channels) != 0) {
    refuse_implausible_size(uint64_t(width), uint64_t(height), bytes.size(), path);
  }
  stbi_uc* pixels = stbi_load_from_memory(data, int(bytes.size()), &width, &height, &channels, 0);
  if (pixels == nullptr) {
    throw data2vec::BadSample("cannot decode image " + path + ": " + stbi_failure_reason());
  }
  // stb returns 1 (grey), 2 (grey, alpha), 3 (RGB) or 4 (RGBA) interleaved channels.
  auto image = torch::from_blob(pixels, {height, width, channels}, torch::kUInt8)
                   .narrow(2, 0, channels <= 2 ? 1 : 3)
                   .clone();
  stbi_image_free(pixels);
  return image;
}

}  // namespace

torch::Tensor decode_image_file(const std::string& path, int64_t channels) {
  TORCH_CHECK(channels == 1 || channels == 3, "decode_image_file: channels must be 1 or 3, got ",
              channels);
  std::string bytes;
  try {
    bytes = io::read_file(path);
  } catch (const std::exception& e) {
    throw data2vec::BadSample("cannot read image " + path + ": " + e.what());
  }
  if (bytes.size() > size_t(INT_MAX)) throw data2vec::BadSample("image " + path + " is over 2 GiB");
  // The format is what the bytes say, whatever the file's extension.
  auto starts_with = [&](const char* magic, size_t n) {
    return bytes.compare(0, n, magic, n) == 0;
  };
  torch::Tensor image;  // [H,W,1 or 3]
  if (starts_with("\xFF\xD8\xFF", 3)) {
    image = decode_jpeg(bytes, path);
  } else if (starts_with("\x89PNG\r\n\x1A\n", 8)) {
    image = decode_png(bytes, path);
  } else if (starts_with("BM", 2)) {
    image = decode_bmp(bytes, path);
  } else {
    throw data2vec::BadSample("cannot decode image " + path +
                              ": not a PNG, JPEG or BMP file (its first bytes say otherwise)");
  }
  if (image.size(2) != channels) {
    if (channels == 3) {
      image = image.expand({-1, -1, 3});
    } else {
      // Pillow's RGB -> L: (19595 R + 38470 G + 7471 B + 2^15) >> 16, ITU-R 601-2 luma.
      const auto rgb = image.to(torch::kInt32);
      image =
          (rgb.select(2, 0) * 19595 + rgb.select(2, 1) * 38470 + rgb.select(2, 2) * 7471 + 32768)
              .div(65536, "floor")
              .to(torch::kUInt8)
              .unsqueeze(2);
    }
  }
  return image.permute({2, 0, 1}).contiguous();
}

Example ImageFolderDataset::get(size_t index, uint64_t seed) const {
  TORCH_CHECK(index < size(), "image folder: index ", index, " >= size ", size());
  return {transform_image(decode_image_file(files_[index], options_.channels()), options_, seed),
          labels_[index]};
}

}  // namespace data2vec::vision
