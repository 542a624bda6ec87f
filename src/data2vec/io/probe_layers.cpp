#include "data2vec/io/probe_layers.h"

#include <algorithm>
#include <stdexcept>

namespace data2vec::io {

int64_t parse_probe_layer(const std::string& name) {
  if (name == "final") return kFinalProbeLayer;
  const auto invalid = [&] {
    return std::invalid_argument("probe layer '" + name +
                                 "': expected final, 0 (local features) or a block number 1..L");
  };
  if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) throw invalid();
  // No encoder has a billion blocks; the cap also keeps stoll from overflowing on long input.
  const size_t first_significant = name.find_first_not_of('0');
  if (first_significant != std::string::npos && name.size() - first_significant > 9) {
    throw invalid();
  }
  return std::stoll(name);
}

std::vector<int64_t> parse_probe_layers(const std::string& spec) {
  std::vector<int64_t> layers;
  for (size_t start = 0;;) {
    const size_t comma = spec.find(',', start);
    const std::string item =
        spec.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    const int64_t layer = parse_probe_layer(item);
    if (std::find(layers.begin(), layers.end(), layer) != layers.end()) {
      throw std::invalid_argument("probe layer '" + item + "' appears twice in '" + spec + "'");
    }
    layers.push_back(layer);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return layers;
}

}  // namespace data2vec::io
