// Image decoding (decode_image_file, stb_image): the first byte picks 1 or 3 channels, the rest
// is the file.
#include <cstddef>
#include <cstdint>

#include "data2vec/vision/datasets.h"
#include "fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const int64_t channels = data[0] % 2 == 0 ? 3 : 1;
  const auto path = data2vec::fuzz::write_input("image", data + 1, size - 1);
  data2vec::fuzz::expect_named_refusal(
      [&] { data2vec::vision::decode_image_file(path, channels); }, path);
  return 0;
}
