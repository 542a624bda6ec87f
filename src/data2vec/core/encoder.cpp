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

torch::Tensor EncoderImpl::v2_mask(const EncoderInput&, int64_t, at::Generator&) {
  TORCH_CHECK(false,
              "this encoder does not implement data2vec 2.0's v2_mask; use algorithm v1 or "
              "override supports_kept_encoding / v2_mask / extract_kept_features");
}

EncoderOutput EncoderImpl::extract_kept_features(const EncoderInput&, const torch::Tensor&,
                                                 int64_t) {
  TORCH_CHECK(false,
              "this encoder does not implement data2vec 2.0's extract_kept_features; use "
              "algorithm v1");
}

EncoderInput EncoderInput::to(const torch::Device& device) const {
  EncoderInput moved;
  moved.source = source.to(device);
  if (padding_mask.defined()) moved.padding_mask = padding_mask.to(device);
  return moved;
}

}  // namespace data2vec
