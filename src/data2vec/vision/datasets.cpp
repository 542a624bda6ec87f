#include "data2vec/vision/datasets.h"

#include <algorithm>
#include <cctype>
#include <climits>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "data2vec/vision/idx.h"

// The one translation unit that compiles stb_image (its own code trips -Wextra).
#define STB_IMAGE_IMPLEMENTATION
#define STBI_FAILURE_USERMSG
// Only the formats the image readers list (.png .jpg .jpeg .bmp): stb's other decoders are
// attack surface a user's folder never needs.
#define STBI_ONLY_PNG
#define STBI_ONLY_JPEG
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

namespace {

bool is_image_file(const fs::path& path) {
  std::string ext = path.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return char(std::tolower(c)); });
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg" || ext == ".bmp";
}

}  // namespace

ImageFolderDataset::ImageFolderDataset(const std::string& root,
                                       const ImageTransformOptions& options)
    : options_(options) {
  TORCH_CHECK(fs::is_directory(root), "image folder ", root,
              ": not a directory (expected root/<class>/<image files>)");
  for (const auto& entry : fs::directory_iterator(root)) {
    if (entry.is_directory()) classes_.push_back(entry.path().filename().string());
  }
  std::sort(classes_.begin(), classes_.end());
  for (size_t c = 0; c < classes_.size(); ++c) {
    std::vector<std::string> class_files;
    for (const auto& entry : fs::directory_iterator(fs::path(root) / classes_[c])) {
      if (entry.is_regular_file() && is_image_file(entry.path())) {
        class_files.push_back(entry.path().string());
      }
    }
    std::sort(class_files.begin(), class_files.end());
    for (auto& f : class_files) {
      files_.push_back(std::move(f));
      labels_.push_back(int64_t(c));
    }
  }
  TORCH_CHECK(!files_.empty(), "image folder ", root,
              ": no .png/.jpg/.jpeg/.bmp files in any root/<class>/ sub-folder");
}

namespace {

// stb_image 2.27 (Debian bookworm) writes past a Huffman table when a JPEG's DHT segment lists
// more than 256 codes (found by fuzz/fuzz_image; 2.28 refuses such a table). Walks the JPEG's
// segments as stb does and returns what is wrong, or "" (also for files that are not JPEG).
std::string oversized_jpeg_huffman_table(const std::string& b) {
  auto byte = [&](size_t i) -> size_t { return i < b.size() ? uint8_t(b[i]) : 0; };
  size_t i = 0;  // SOI, after any number of 0xFF fill bytes (stb skips them too)
  while (i < b.size() && byte(i) == 0xFF) ++i;
  if (i == 0 || byte(i) != 0xD8) return "";
  ++i;
  while (i + 1 < b.size()) {
    if (byte(i) != 0xFF) {  // entropy-coded data or junk between segments
      ++i;
      continue;
    }
    const size_t marker = byte(i + 1);
    if (marker == 0xFF) {  // fill byte
      ++i;
      continue;
    }
    if (marker == 0x00 || marker == 0x01 || (marker >= 0xD0 && marker <= 0xD9)) {
      i += 2;  // stuffed byte, TEM, RST0-7, SOI, EOI: no length
      continue;
    }
    const size_t length = byte(i + 2) << 8 | byte(i + 3);
    if (marker == 0xC4) {  // DHT: tables of (class/id, 16 counts, the codes), as stb reads them
      long left = long(length) - 2;
      for (size_t p = i + 4; left > 0 && p < b.size();) {
        size_t codes = 0;
        for (size_t k = 0; k < 16; ++k) codes += byte(p + 1 + k);
        if (codes > 256) {
          return "a Huffman table lists " + std::to_string(codes) + " codes (at most 256)";
        }
        p += 17 + codes;
        left -= long(17 + codes);
      }
    }
    i += 2 + length;
  }
  return "";
}

// stb_image 2.27 copies a PNG's first IDAT chunk into a buffer it has not allocated yet when
// that chunk is empty (memcpy to NULL, found by fuzz/fuzz_image). No encoder writes one.
bool empty_first_png_idat(const std::string& b) {
  static const char kSignature[] = "\x89PNG\r\n\x1a\n";
  if (b.compare(0, 8, kSignature, 8) != 0) return false;
  for (size_t at = 8; at + 8 <= b.size();) {
    const size_t length = size_t(uint8_t(b[at])) << 24 | size_t(uint8_t(b[at + 1])) << 16 |
                          size_t(uint8_t(b[at + 2])) << 8 | size_t(uint8_t(b[at + 3]));
    if (b.compare(at + 4, 4, "IDAT") == 0) return length == 0;
    at += 12 + length;
  }
  return false;
}

}  // namespace

torch::Tensor decode_image_file(const std::string& path, int64_t channels) {
  std::ifstream in(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (!in.good() && !in.eof()) throw data2vec::BadSample("cannot read image " + path);
  if (bytes.size() > size_t(INT_MAX)) throw data2vec::BadSample("image " + path + " is over 2 GiB");
  const auto bad_table = oversized_jpeg_huffman_table(bytes);
  if (!bad_table.empty()) {
    throw data2vec::BadSample("cannot decode image " + path + ": corrupt JPEG: " + bad_table);
  }
  if (empty_first_png_idat(bytes)) {
    throw data2vec::BadSample("cannot decode image " + path + ": corrupt PNG: empty IDAT chunk");
  }
  int width = 0, height = 0, file_channels = 0;
  // A damaged header can declare a huge image that stb_image then decodes in full from a few
  // bytes (truncated data decodes as zeros): a 729-byte JPEG declaring 56840x1542 took 48 s
  // and 263 MB (found by fuzz/fuzz_image). No format stb reads packs more than ~8,300 pixels
  // in a byte (1-bit PNG through deflate's 1032:1), so a header claiming more is damage; and
  // as Pillow does (DecompressionBombError), nothing over 2 x 89,478,485 pixels is decoded.
  if (stbi_info_from_memory(reinterpret_cast<const stbi_uc*>(bytes.data()), int(bytes.size()),
                            &width, &height, &file_channels) != 0) {
    const uint64_t declared = uint64_t(width) * uint64_t(height);
    constexpr uint64_t kPixelsPerByte = 16384, kAnySmallImage = uint64_t(1) << 22,
                       kPillowBomb = 2 * uint64_t(89478485);
    if (declared > kPillowBomb ||
        declared > std::max(kAnySmallImage, kPixelsPerByte * uint64_t(bytes.size()))) {
      throw data2vec::BadSample("cannot decode image " + path + ": its header declares " +
                                std::to_string(width) + "x" + std::to_string(height) +
                                " pixels in " + std::to_string(bytes.size()) +
                                " bytes (a damaged file or a decompression bomb)");
    }
  }
  stbi_uc* pixels =
      stbi_load_from_memory(reinterpret_cast<const stbi_uc*>(bytes.data()), int(bytes.size()),
                            &width, &height, &file_channels, int(channels));
  if (pixels == nullptr) {
    throw data2vec::BadSample("cannot decode image " + path + ": " + stbi_failure_reason());
  }
  // [H,W,C] interleaved -> [C,H,W]. An explicit clone: for C = 1 the permuted view already
  // counts as contiguous, and contiguous() would keep pointing into stb's freed buffer.
  auto image = torch::from_blob(pixels, {height, width, channels}, torch::kUInt8)
                   .permute({2, 0, 1})
                   .clone(at::MemoryFormat::Contiguous);
  stbi_image_free(pixels);
  return image;
}

Example ImageFolderDataset::get(size_t index, uint64_t seed) const {
  TORCH_CHECK(index < size(), "image folder: index ", index, " >= size ", size());
  return {transform_image(decode_image_file(files_[index], options_.channels()), options_, seed),
          labels_[index]};
}

}  // namespace data2vec::vision
