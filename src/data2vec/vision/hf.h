// Hugging Face Data2VecVision (transformers' modeling_data2vec_vision.py, a BEiT copy): its
// config.json as VisionEncoderOptions and back, and its weight names (the table in encoder.h).
#pragma once

#include <string>

#include "data2vec/io/hf.h"
#include "data2vec/vision/encoder.h"

namespace data2vec::vision {

// model_type "data2vec-vision". Every key that changes the forward pass is read; a value this
// port does not implement (hidden_act other than gelu, non-square images) is an error naming it.
// "add_pooling_layer" (the model constructor's argument, not a config attribute) is read from
// the same object: import-hf records there whether the weights carry a pooler.
VisionEncoderOptions vision_options_from_hf(const io::HfConfig& config);

// config.json of Data2VecVisionModel for `options` (every attribute the class reads).
nlohmann::json hf_vision_config(const VisionEncoderOptions& options);

// Our names <-> HF's (Data2VecVisionModel; task models prefix "data2vec_vision.").
io::NameTable hf_vision_names();

}  // namespace data2vec::vision
