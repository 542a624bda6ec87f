// Hugging Face config.json: the file read, then the vision and text options made from it (the
// importer reads them this way before building a model; the audio options' reader links the
// whole audio encoder and is left out).
#include <cstddef>
#include <cstdint>

#include "data2vec/io/hf.h"
#include "data2vec/text/hf.h"
#include "data2vec/vision/hf.h"
#include "fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using data2vec::fuzz::expect_named_refusal;
  const auto path = data2vec::fuzz::write_input("config.json", data, size);
  expect_named_refusal(
      [&] {
        const auto config = data2vec::io::HfConfig::load(path);
        expect_named_refusal([&] { data2vec::vision::vision_options_from_hf(config); }, path);
        expect_named_refusal([&] { data2vec::text::text_options_from_hf(config); }, path);
        expect_named_refusal([&] { config.architecture(); }, path);
      },
      path);
  return 0;
}
