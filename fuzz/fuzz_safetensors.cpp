// safetensors (model.safetensors, rng.safetensors, features): parse_safetensors over raw bytes.
#include <cstddef>
#include <cstdint>
#include <string>

#include "data2vec/io/safetensors.h"
#include "fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  data2vec::fuzz::expect_named_refusal(
      [&] { data2vec::io::parse_safetensors(bytes, "fuzz.safetensors"); }, "fuzz.safetensors");
  return 0;
}
