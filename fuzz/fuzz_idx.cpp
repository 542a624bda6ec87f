// IDX files, plain or gzipped (read_idx through zlib).
#include <cstddef>
#include <cstdint>

#include "data2vec/vision/idx.h"
#include "fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto path = data2vec::fuzz::write_input("input.idx.gz", data, size);
  data2vec::fuzz::expect_named_refusal([&] { data2vec::vision::read_idx(path); }, path);
  return 0;
}
