// Hugging Face Data2VecAudio (transformers' modeling_data2vec_audio.py, wav2vec 2.0's layout):
// its config.json as AudioEncoderOptions and back, and its weight names (the table in encoder.h).
#pragma once

#include "data2vec/audio/encoder.h"
#include "data2vec/io/hf.h"

namespace data2vec::audio {

// model_type "data2vec-audio": the conv stack from conv_dim / conv_kernel / conv_stride (with
// conv_bias), the positional conv stack, the blocks. Unsupported values (an adapter, another
// activation, lists of different lengths) are errors naming the key.
AudioEncoderOptions audio_options_from_hf(const io::HfConfig& config);

// config.json of Data2VecAudioModel for `options`.
nlohmann::json hf_audio_config(const AudioEncoderOptions& options);

// Our names <-> HF's (Data2VecAudioModel; task models prefix "data2vec_audio."). HF's model has
// masked_spec_embed only when config mask_time_prob or mask_feature_prob is > 0
// (hf_has_masked_spec_embed); without it ours stays as initialised and is not exchanged.
io::NameTable hf_audio_names(bool with_masked_spec_embed = true);
bool hf_has_masked_spec_embed(const io::HfConfig& config);

}  // namespace data2vec::audio
