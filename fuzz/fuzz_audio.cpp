// Audio files (WAV, FLAC, Ogg Vorbis...) through our libsndfile wrapper: the header check the
// manifest uses, then the full read with resampling to 16 kHz.
#include <cstddef>
#include <cstdint>

#include "data2vec/audio/io.h"
#include "fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto path = data2vec::fuzz::write_input("audio", data, size);
  data2vec::fuzz::expect_named_refusal([&] { data2vec::audio::read_audio_info(path); }, path);
  data2vec::fuzz::expect_named_refusal([&] { data2vec::audio::read_audio(path, 16000); }, path);
  return 0;
}
