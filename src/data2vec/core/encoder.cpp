#include "data2vec/core/encoder.h"

namespace data2vec {

LayerResultKind parse_layer_result_kind(const std::string& name) {
  if (name == "ffn") return LayerResultKind::kFfn;
  if (name == "block") return LayerResultKind::kBlock;
  TORCH_CHECK(false, "unknown layer result kind '", name, "' (expected ffn or block)");
}

std::string to_string(LayerResultKind kind) {
  return kind == LayerResultKind::kFfn ? "ffn" : "block";
}

EncoderInput EncoderInput::to(const torch::Device& device) const {
  EncoderInput moved;
  moved.source = source.to(device);
  if (padding_mask.defined()) moved.padding_mask = padding_mask.to(device);
  return moved;
}

}  // namespace data2vec
