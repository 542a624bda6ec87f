#pragma once
// The grammar of the config key eval.probe_layer, in one place for the config check (which must
// reject a bad value before any run starts) and the evaluation that reads it.

#include <cstdint>
#include <string>
#include <vector>

namespace data2vec::io {

// "final": the encoder's output.
constexpr int64_t kFinalProbeLayer = -1;

// "final" -> kFinalProbeLayer; "0" -> 0 (local features); "k" -> block k (leading zeros allowed).
// Throws std::invalid_argument naming the item for anything else, a too-large number included.
int64_t parse_probe_layer(const std::string& name);

// One layer as above, or a comma-separated list of them ("1,2,3,4", "final,3"). Throws
// std::invalid_argument naming the item at fault; a layer may not repeat (3 and 03 are one layer).
std::vector<int64_t> parse_probe_layers(const std::string& spec);

}  // namespace data2vec::io
