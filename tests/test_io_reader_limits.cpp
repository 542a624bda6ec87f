// Readers of untrusted files refuse shapes that do not fit: an element count or byte size that
// overflows 64 bits, or more data than the file holds, is an error naming the file, not a wrapped
// size, a huge allocation or a read past the end of a buffer. Also the inputs the fuzz targets
// (fuzz/) found, kept in fuzz/corpus/.
#include <caffe2/serialize/inline_container.h>
#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include "data2vec/audio/io.h"
#include "data2vec/io/config.h"
#include "data2vec/io/files.h"
#include "data2vec/io/hf.h"
#include "data2vec/io/safetensors.h"
#include "data2vec/vision/datasets.h"
#include "data2vec/vision/idx.h"
#include "support.h"

namespace {

using data2vec::testing::error_of;
using data2vec::testing::fixture_path;
using data2vec::testing::make_temp_dir;

// A safetensors file with one tensor entry given as raw JSON, and `data_bytes` zero bytes.
std::string safetensors_with(const std::string& entry_json, size_t data_bytes) {
  const std::string json = "{\"t\":" + entry_json + "}";
  std::string out;
  for (int i = 0; i < 8; ++i) out.push_back(char((uint64_t(json.size()) >> (8 * i)) & 0xff));
  return out + json + std::string(data_bytes, '\0');
}

void expect_named_error(const std::string& message, const std::string& file,
                        const std::string& what) {
  EXPECT_NE(message.find(file), std::string::npos) << message;
  EXPECT_NE(message.find(what), std::string::npos) << message;
}

// A fuzz/corpus input written as a fresh temporary file `name`, less its first `skip` bytes (the
// image target's first byte is its channel choice, not part of the file).
std::string corpus_input_as(const std::string& corpus_file, const std::string& name,
                            size_t skip = 0) {
  const auto input =
      data2vec::io::read_file(std::string(DATA2VEC_SOURCE_DIR) + "/fuzz/corpus/" + corpus_file);
  const auto path = make_temp_dir("reader-limits") + "/" + name;
  data2vec::io::write_file_atomically(path, input.substr(skip));
  return path;
}

TEST(SafetensorsLimits, ElementCountThatWrapsToZeroIsRefused) {
  // 2^32 * 2^32 elements wrap to 0 in 64 bits, which matched the empty data range [0, 0].
  const auto bytes = safetensors_with(
      R"({"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]})", 0);
  expect_named_error(error_of([&] { data2vec::io::parse_safetensors(bytes, "wrap.safetensors"); }),
                     "wrap.safetensors", "overflows 64 bits");
}

TEST(SafetensorsLimits, ByteSizeThatWrapsIsRefused) {
  // 2^62 elements fit in 64 bits, 4 bytes each do not (and wrap to 0 bytes).
  const auto bytes =
      safetensors_with(R"({"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,0]})", 0);
  expect_named_error(error_of([&] { data2vec::io::parse_safetensors(bytes, "bytes.safetensors"); }),
                     "bytes.safetensors", "overflows 64 bits");
}

TEST(SafetensorsLimits, NonIntegerShapeIsRefused) {
  const auto bytes = safetensors_with(R"({"dtype":"F32","shape":[1e30],"data_offsets":[0,4]})", 4);
  expect_named_error(error_of([&] { data2vec::io::parse_safetensors(bytes, "float.safetensors"); }),
                     "float.safetensors", "not an integer");
  const auto negative = safetensors_with(R"({"dtype":"F32","shape":[1],"data_offsets":[-4,0]})", 4);
  expect_named_error(
      error_of([&] { data2vec::io::parse_safetensors(negative, "negative.safetensors"); }),
      "negative.safetensors", "not a non-negative integer");
}

TEST(SafetensorsLimits, ShapeLargerThanTheFileIsRefused) {
  const auto bytes =
      safetensors_with(R"({"dtype":"F32","shape":[1000000],"data_offsets":[0,4000000]})", 16);
  expect_named_error(error_of([&] { data2vec::io::parse_safetensors(bytes, "big.safetensors"); }),
                     "big.safetensors", "outside the 16 data bytes");
}

// IDX header: 0 0 0x08 ndims, then each dim as a big-endian uint32.
std::string idx_header(const std::vector<uint32_t>& dims) {
  std::string out{'\0', '\0', '\x08', char(dims.size())};
  for (auto d : dims) {
    for (int shift = 24; shift >= 0; shift -= 8) out.push_back(char((d >> shift) & 0xff));
  }
  return out;
}

TEST(IdxLimits, ElementCountOverflowIsRefused) {
  const auto dir = make_temp_dir("idx-limits");
  const auto path = dir + "/overflow.idx";
  data2vec::io::write_file_atomically(path, idx_header({0xffffffffu, 0xffffffffu, 0xffffffffu}));
  expect_named_error(error_of([&] { data2vec::vision::read_idx(path); }), path,
                     "more elements than 64 bits can count");
}

TEST(IdxLimits, DimsLargerThanTheFileAreTruncationNotAnAllocation) {
  // 2^31 * 2^31 bytes (4 EiB) announced, 3 present: refused as truncated, naming the file,
  // before any allocation of the announced size.
  const auto dir = make_temp_dir("idx-limits");
  const auto path = dir + "/huge.idx";
  data2vec::io::write_file_atomically(path, idx_header({0x80000000u, 0x80000000u}) + "abc");
  expect_named_error(error_of([&] { data2vec::vision::read_idx(path); }), path,
                     "truncated, 3 of 4611686018427387904");
}

// The committed pytorch_model.bin fixture, with its data.pkl passed through `edit` and
// rewritten (the zip's CRCs follow).
std::string edited_state_dict(const std::string& dir,
                              const std::function<std::string(std::string)>& edit) {
  caffe2::serialize::PyTorchStreamReader in(fixture_path("hf_pickle/pytorch_model.bin"));
  const auto path = dir + "/pytorch_model.bin";
  caffe2::serialize::PyTorchStreamWriter out(path);
  for (const auto& name : in.getAllRecords()) {
    if (name == "version" || name == ".data/version") continue;  // the writer adds its own
    const auto [data, size] = in.getRecord(name);
    std::string bytes(static_cast<const char*>(data.get()), size);
    if (name == "data.pkl") bytes = edit(bytes);
    out.writeRecord(name, bytes.data(), bytes.size());
  }
  out.writeEndOfFile();
  return path;
}

// The first tensor of the fixture, encoder.weight, is pickled with size (3, 5), stride (5, 1)
// over a storage of 15 floats.
const std::string kWeightSizes("K\x03K\x05\x86", 5);

TEST(TorchStateDictLimits, EditingHelperKeepsAReadableFile) {
  const auto dir = make_temp_dir("pickle-limits");
  const auto path = edited_state_dict(dir, [](std::string pkl) {
    EXPECT_NE(pkl.find(kWeightSizes), std::string::npos);
    return pkl;
  });
  EXPECT_EQ(data2vec::io::read_torch_state_dict(path).at("encoder.weight").sizes(),
            torch::IntArrayRef({3, 5}));
}

TEST(TorchStateDictLimits, SizesBeyondTheStoredBytesAreRefused) {
  // (3, 50) with stride (5, 1) reaches element 59 of a 15-element storage.
  const auto dir = make_temp_dir("pickle-limits");
  const auto path = edited_state_dict(dir, [](std::string pkl) {
    return pkl.replace(pkl.find(kWeightSizes), kWeightSizes.size(),
                       std::string("K\x03K\x32\x86", 5));
  });
  expect_named_error(error_of([&] { data2vec::io::read_torch_state_dict(path); }), path,
                     "needs 240 bytes of storage but the archive holds 60");
}

TEST(TorchStateDictLimits, OverflowingSizesAreRefused) {
  // (2^62, 5): LONG1 with 8 bytes for the first size.
  const auto dir = make_temp_dir("pickle-limits");
  const auto path = edited_state_dict(dir, [](std::string pkl) {
    const std::string huge("\x8a\x08\0\0\0\0\0\0\0\x40K\x05\x86", 13);
    return pkl.replace(pkl.find(kWeightSizes), kWeightSizes.size(), huge);
  });
  const auto message = error_of([&] { data2vec::io::read_torch_state_dict(path); });
  EXPECT_NE(message.find(path), std::string::npos) << message;
  EXPECT_NE(message.find("overflow"), std::string::npos) << message;
}

// Found by fuzz/fuzz_torch_state_dict: a damaged pickle made LibTorch's unpickler throw
// std::out_of_range (vector::_M_range_check), which passed through without the file.
TEST(TorchStateDictLimits, AnUnpicklerRangeErrorNamesTheFile) {
  const auto path =
      corpus_input_as("torch_state_dict/crash-unpickler-out-of-range", "pytorch_model.bin");
  // LibTorch's own words differ by version (1.13: std::vector's _M_range_check; 2.6: "out of
  // bounds access ... memo_table_"); ours name the file and what it is not.
  expect_named_error(error_of([&] { data2vec::io::read_torch_state_dict(path); }), path,
                     "is not a readable PyTorch state dict");
}

// Found by fuzz/fuzz_torch_state_dict: a LONG_BINPUT to memo slot 778,204,021 ("usb." read as
// a number) made LibTorch's unpickler resize its memo table to 12 GB.
TEST(TorchStateDictLimits, AMemoSlotBeyondThePickleIsRefused) {
  const auto path = corpus_input_as("torch_state_dict/oom-memo-slot-778m", "pytorch_model.bin");
  expect_named_error(error_of([&] { data2vec::io::read_torch_state_dict(path); }), path,
                     "memoizes to slot 778204021");
}

TEST(TorchStateDictLimits, AnEditedMemoSlotOfTwoToThe31IsRefused) {
  // The BINPUT (q, 1-byte slot) that memoizes the fixture's OrderedDict() becomes a
  // LONG_BINPUT (r) to slot 2^31.
  const auto dir = make_temp_dir("pickle-limits");
  const auto path = edited_state_dict(dir, [](std::string pkl) {
    const auto at = pkl.find(")Rq");
    EXPECT_NE(at, std::string::npos);
    return pkl.replace(at + 2, 2, std::string("r\0\0\0\x80", 5));
  });
  expect_named_error(error_of([&] { data2vec::io::read_torch_state_dict(path); }), path,
                     "memoizes to slot 2147483648");
}

// Found by fuzz/fuzz_image: a 729-byte JPEG whose header declares 56840 x 1542 pixels, which
// stb_image decoded in full (its missing data as zeros): 48 s and 263 MB for one sample.
TEST(ImageLimits, AHeaderDeclaringFarMorePixelsThanTheFileHoldsIsRefused) {
  const auto path = corpus_input_as("image/slow-jpeg-declares-56840x1542", "bomb.jpg", 1);
  const auto message = error_of([&] { data2vec::vision::decode_image_file(path, 3); });
  expect_named_error(message, path, "declares 56840x1542 pixels in 729 bytes");
  EXPECT_THROW(data2vec::vision::decode_image_file(path, 3), data2vec::BadSample);
}

// The same guard lets a large, highly compressible real image through: a flat 2400 x 2000 PNG
// (4.8 M pixels, above the 4 M pixels allowed whatever the size) is a few kilobytes.
TEST(ImageLimits, ALargeFlatPngStillDecodes) {
  const auto dir = make_temp_dir("image-limits");
  const auto path = dir + "/flat.png";
  ASSERT_TRUE(data2vec::testing::write_png(path, torch::full({2000, 2400, 3}, 200, torch::kUInt8)));
  const auto image = data2vec::vision::decode_image_file(path, 3);
  EXPECT_EQ(image.sizes(), torch::IntArrayRef({3, 2000, 2400}));
  EXPECT_EQ(image.min().item<int>(), 200);
  EXPECT_EQ(image.max().item<int>(), 200);
}

// Found by fuzz/fuzz_image in stb_image 2.27, which decoded PNG and JPEG before libpng and
// libjpeg-turbo did: a JPEG Huffman table (DHT) listing more than 256 codes (written past the
// table), the same behind 0xFF fill bytes (which stb skipped; libjpeg, like the JPEG standard,
// wants the SOI marker first), and a PNG whose first IDAT chunk is empty (memcpy to NULL). Each
// is refused with the file's name and the reason.
TEST(ImageLimits, FilesThatBrokeStbImageAreRefusedByName) {
  for (const auto& [name, reason] :
       {std::pair<std::string, std::string>{"crash-jpeg-dht-over-256-codes", "corrupt JPEG"},
        {"crash-jpeg-dht-after-fill-bytes", "not a PNG, JPEG or BMP"},
        {"crash-png-empty-first-idat", "corrupt PNG"}}) {
    const auto path = corpus_input_as("image/" + name, "input.img", 1);
    expect_named_error(error_of([&] { data2vec::vision::decode_image_file(path, 3); }), path,
                       reason);
    EXPECT_THROW(data2vec::vision::decode_image_file(path, 3), data2vec::BadSample);
  }
}

// Found by fuzz/fuzz_audio: a FLAC header announcing 2^29 frames made read_audio allocate 2 GiB
// before reading. Here the seed's STREAMINFO announces 2^36 - 1 frames (275 GB): refused as
// truncated, naming the file, without allocating the announced size.
TEST(AudioLimits, FrameCountBeyondTheFileIsTruncationNotAnAllocation) {
  auto flac =
      data2vec::io::read_file(std::string(DATA2VEC_SOURCE_DIR) + "/fuzz/corpus/audio/mono8k.flac");
  ASSERT_EQ(flac.substr(0, 4), "fLaC");
  flac[21] = char((uint8_t(flac[21]) & 0xf0) | 0x0f);  // total samples: the low 36 bits
  for (int i = 22; i < 26; ++i) flac[i] = '\xff';
  const auto dir = make_temp_dir("audio-limits");
  const auto path = dir + "/huge.flac";
  data2vec::io::write_file_atomically(path, flac);
  expect_named_error(error_of([&] { data2vec::audio::read_audio(path, 16000); }), path,
                     "of 68719476735 frames");
}

// Found by fuzz/fuzz_audio: a WAV header announcing a sample rate libsamplerate cannot convert
// from (beyond a factor of 256) surfaced as its error, without the file.
TEST(AudioLimits, SampleRateBeyondTheResamplerIsNamedWithTheFile) {
  auto wav =
      data2vec::io::read_file(std::string(DATA2VEC_SOURCE_DIR) + "/fuzz/corpus/audio/mono8k.wav");
  ASSERT_EQ(wav.substr(0, 4), "RIFF");
  const uint32_t rate = 8000000;  // bytes 24-27: the sample rate, little-endian
  for (int i = 0; i < 4; ++i) wav[24 + i] = char((rate >> (8 * i)) & 0xff);
  const auto dir = make_temp_dir("audio-limits");
  const auto path = dir + "/fast.wav";
  data2vec::io::write_file_atomically(path, wav);
  expect_named_error(error_of([&] { data2vec::audio::read_audio(path, 16000); }), path,
                     "sample rate 8000000 Hz cannot be resampled to 16000 Hz");
}

// Found by fuzz/fuzz_config: a YAML key that is itself a map or list (`? [a, b]: 1`) surfaced as
// yaml-cpp's "bad conversion" without the file or line.
TEST(ConfigLimits, AKeyThatIsNotAPlainNameIsNamedWithTheFile) {
  data2vec::io::Config config;
  for (const char* text : {"? [a, b]: 1\n", "train:\n  ? {x: 1}: 2\n"}) {
    expect_named_error(error_of([&] { data2vec::io::apply_yaml(config, text, "bad.yaml"); }),
                       "bad.yaml", "a key must be a plain name");
  }
}

}  // namespace
