// IDX files (the MNIST / Fashion-MNIST format), gzipped or plain:
//   bytes 0-1: 0, byte 2: element type (0x08 = uint8), byte 3: number of dims n,
//   then n big-endian uint32 sizes, then the elements in row-major order.
#pragma once

#include <torch/torch.h>

#include <string>

namespace data2vec::vision {

// The file's contents as a uint8 tensor with the file's dims (e.g. [60000,28,28] images or
// [60000] labels). zlib reads .gz and plain files alike. Throws naming the file on a missing
// file, a bad magic number, an element type other than uint8, or a truncated body.
torch::Tensor read_idx(const std::string& path);

}  // namespace data2vec::vision
