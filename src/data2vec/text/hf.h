// Hugging Face Data2VecText (transformers' modeling_data2vec_text.py, RoBERTa's layout): its
// config.json as TextEncoderOptions and back, and its weight names (the table in encoder.h).
#pragma once

#include "data2vec/io/hf.h"
#include "data2vec/text/encoder.h"

namespace data2vec::text {

// model_type "data2vec-text". Imported encoders use RoBERTa's position numbering and carry the
// pooler when "add_pooling_layer" (the model constructor's argument, recorded in the same object
// by import-hf; default true as in Data2VecTextModel; sequence-classification models have none).
// <mask> is taken as the last id, as in RoBERTa's vocabulary. Unsupported values
// (position_embedding_type other than absolute, a decoder, another activation) are errors
// naming the key.
TextEncoderOptions text_options_from_hf(const io::HfConfig& config);

// config.json of Data2VecTextModel for `options`. Our own encoders (positions from 0) are
// exported with max_position_embeddings = max_positions + pad_id + 1.
nlohmann::json hf_text_config(const TextEncoderOptions& options);

// Our names <-> HF's (Data2VecTextModel; task models prefix "data2vec_text.").
io::NameTable hf_text_names();

// The exported state: names mapped, and for an encoder without RoBERTa positions the position
// table shifted down by pad_id + 1 rows (zeros in front) so HF's numbering reads the same rows.
io::StateDict text_state_to_hf(const io::StateDict& ours, const TextEncoderOptions& options,
                               const std::string& prefix);

}  // namespace data2vec::text
