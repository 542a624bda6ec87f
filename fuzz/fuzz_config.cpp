// The YAML configuration: one document applied over the defaults, then the cross-key checks
// and the algorithm defaults, as load_config does (without following `base:` to other files).
#include <cstddef>
#include <cstdint>
#include <string>

#include "data2vec/io/config.h"
#include "fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  data2vec::fuzz::expect_named_refusal(
      [&] {
        data2vec::io::Config config;
        data2vec::io::ConfigOrigins origins;
        data2vec::io::apply_yaml(config, text, "fuzz.yaml", &origins);
        data2vec::io::apply_algorithm_defaults(config, origins);
        data2vec::io::validate(config, &origins);
        data2vec::io::to_yaml(config);
      },
      "fuzz.yaml");
  return 0;
}
