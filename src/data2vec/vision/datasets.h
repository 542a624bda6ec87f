// Image datasets: IDX files (Fashion-MNIST, MNIST) held in memory, and image folders
// (root/<class>/<file>, PNG / JPEG / BMP) decoded on demand. Both implement the core data
// contract: get(index, seed) -> Example{float [C,S,S] (S = image_size), label}.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "data2vec/core/dataset.h"
#include "data2vec/vision/augment.h"

namespace data2vec::vision {

// MNIST and Fashion-MNIST both have ten classes.
inline constexpr int64_t kMnistClasses = 10;

class IdxImageDataset : public data2vec::Dataset {
 public:
  // `images_path`: IDX [N,H,W] (grey) or [N,H,W,3]; `labels_path`: IDX [N], or "" (unlabelled).
  // `num_classes` > 0: the set's classes (10 for MNIST and Fashion-MNIST); a label outside
  // [0, num_classes) is an error naming the file. 0: one more than the largest label.
  IdxImageDataset(const std::string& images_path, const std::string& labels_path,
                  const ImageTransformOptions& options, int64_t num_classes = 0);

  // Fashion-MNIST's four files under `root` (train-images-idx3-ubyte.gz,
  // train-labels-idx1-ubyte.gz, t10k-...). `options` defaults to fashion_mnist_transform(train):
  // augmentation on the train split.
  static std::shared_ptr<IdxImageDataset> load_fashion_mnist(const std::string& root, bool train);
  static std::shared_ptr<IdxImageDataset> load_fashion_mnist(const std::string& root, bool train,
                                                             const ImageTransformOptions& options);

  size_t size() const override { return size_t(images_.size(0)); }
  Example get(size_t index, uint64_t seed) const override;
  std::string describe(size_t index) const override;
  int64_t num_classes() const override { return num_classes_; }

  const torch::Tensor& images() const { return images_; }  // [N,C,H,W] uint8
  const torch::Tensor& labels() const { return labels_; }  // [N] int64, -1 when unlabelled
  const ImageTransformOptions& options() const { return options_; }

 private:
  std::string images_path_;
  ImageTransformOptions options_;
  torch::Tensor images_;  // [N,C,H,W] uint8
  torch::Tensor labels_;  // [N] int64
  int64_t num_classes_ = 0;
};

// The image files the folder readers (image-folder, embed) take, matched in any case.
inline const std::vector<std::string> kImageFileExtensions = {".png", ".jpg", ".jpeg", ".bmp"};

class ImageFolderDataset : public data2vec::Dataset {
 public:
  // Lists the image files under each root/<class>/, sorted by path (sub-folders and links to
  // folders included, dot-names skipped: io::list_files) without decoding anything; classes are
  // the sorted sub-folder names (hidden ones, such as .ipynb_checkpoints, left out; one class
  // alone is warned of). `classes` given (a held-out split's: the training split's classes()),
  // labels are positions in it, and a sub-folder not in it is an error: each split's own folder
  // list would number the classes differently.
  ImageFolderDataset(const std::string& root, const ImageTransformOptions& options,
                     const std::vector<std::string>& classes = {});

  size_t size() const override { return files_.size(); }
  // Decodes with decode_image_file; an unreadable or corrupt file throws BadSample naming it.
  Example get(size_t index, uint64_t seed) const override;
  std::string describe(size_t index) const override { return files_.at(index); }
  int64_t num_classes() const override { return int64_t(classes_.size()); }

  const std::vector<std::string>& classes() const { return classes_; }
  const std::vector<std::string>& files() const { return files_; }
  const std::vector<int64_t>& file_labels() const { return labels_; }

 private:
  ImageTransformOptions options_;
  std::vector<std::string> classes_;
  std::vector<std::string> files_;  // full paths
  std::vector<int64_t> labels_;     // class index per file
};

// Decodes a PNG, JPEG or BMP file (the format its bytes say) to uint8 [channels,H,W], channels 1
// or 3 (grey is repeated; RGB becomes Pillow's "L" luma; alpha is dropped); throws
// data2vec::BadSample naming the file and the decoder's reason when it cannot.
torch::Tensor decode_image_file(const std::string& path, int64_t channels);

}  // namespace data2vec::vision
