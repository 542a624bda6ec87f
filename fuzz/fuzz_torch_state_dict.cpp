// pytorch_model.bin (a torch.save zip of a dict of tensors), through our pickle rewrite and
// LibTorch's reader and unpickler.
#include <cstddef>
#include <cstdint>

#include "data2vec/io/hf.h"
#include "fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto path = data2vec::fuzz::write_input("pytorch_model.bin", data, size);
  data2vec::fuzz::expect_named_refusal([&] { data2vec::io::read_torch_state_dict(path); }, path);
  return 0;
}
