// Vision data path: IDX reading (gz and plain), image folders (PNG, JPEG, corrupt files), and
// the augmentations.
#include <gtest/gtest.h>
#include <png.h>
#include <turbojpeg.h>
#include <zlib.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "data2vec/vision/augment.h"
#include "data2vec/vision/datasets.h"
#include "data2vec/vision/idx.h"
#include "support.h"

// The test's own PNG / JPEG writer (stb's code trips -Wextra).
#define STB_IMAGE_WRITE_IMPLEMENTATION
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#include <stb_image_write.h>
#pragma GCC diagnostic pop

namespace fs = std::filesystem;
using data2vec::testing::error_of;
using data2vec::testing::make_temp_dir;
using data2vec::testing::tensors_close;
using namespace data2vec::vision;

namespace {

// IDX bytes for uint8 data of the given dims.
std::string idx_bytes(const std::vector<int64_t>& dims, const std::vector<uint8_t>& data) {
  std::string out = {0, 0, 0x08, char(dims.size())};
  for (const auto d : dims) {
    out += {char((d >> 24) & 0xff), char((d >> 16) & 0xff), char((d >> 8) & 0xff), char(d & 0xff)};
  }
  out.append(data.begin(), data.end());
  return out;
}

void write_plain(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

void write_gz(const std::string& path, const std::string& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(gzwrite(f, bytes.data(), unsigned(bytes.size())), int(bytes.size()));
  gzclose(f);
}

std::vector<uint8_t> iota_bytes(size_t n, int start = 0) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = uint8_t((start + int(i) * 7) % 256);
  return v;
}

// A 16-bit RGB PNG with no gAMA, sRGB or iCCP chunk, as OpenCV and scientific tools write them.
void write_png16(const std::string& path, int width, int height,
                 const std::vector<uint16_t>& rgb) {
  FILE* file = std::fopen(path.c_str(), "wb");
  ASSERT_NE(file, nullptr);
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  png_init_io(png, file);
  png_set_IHDR(png, info, png_uint_32(width), png_uint_32(height), 16, PNG_COLOR_TYPE_RGB,
               PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  png_set_swap(png);  // our samples are little-endian in memory; PNG stores big-endian
  for (int y = 0; y < height; ++y) {
    png_write_row(png, reinterpret_cast<png_const_bytep>(rgb.data() + size_t(y) * width * 3));
  }
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  std::fclose(file);
}

}  // namespace

TEST(VisionIdx, ReadsGzAndPlain) {
  const auto dir = make_temp_dir("vision-idx");
  const auto bytes = idx_bytes({3, 2, 4}, iota_bytes(24));
  write_plain(dir + "/a.idx", bytes);
  write_gz(dir + "/a.idx.gz", bytes);
  const auto data = iota_bytes(24);
  const auto expected = torch::tensor(std::vector<int64_t>(data.begin(), data.end()))
                            .to(torch::kUInt8)
                            .view({3, 2, 4});
  for (const auto* name : {"/a.idx", "/a.idx.gz"}) {
    const auto t = read_idx(dir + name);
    EXPECT_EQ(t.scalar_type(), torch::kUInt8) << name;
    EXPECT_TRUE(t.equal(expected)) << name << ": " << t;
  }
  write_gz(dir + "/labels.gz", idx_bytes({5}, {3, 1, 4, 1, 5}));
  EXPECT_TRUE(read_idx(dir + "/labels.gz").equal(torch::tensor({3, 1, 4, 1, 5}).to(torch::kUInt8)));
}

TEST(VisionIdx, ErrorsNameTheFile) {
  const auto dir = make_temp_dir("vision-idx-bad");
  write_plain(dir + "/magic.idx", std::string("\x12\x34\x08\x01\0\0\0\x01\x05", 9));
  write_gz(dir + "/short.idx.gz", idx_bytes({4, 4}, iota_bytes(10)));  // 16 announced
  write_plain(dir + "/float.idx", idx_bytes({1}, {0, 0, 0, 0}).replace(2, 1, "\x0d"));
  auto msg = error_of([&] { read_idx(dir + "/magic.idx"); });
  EXPECT_NE(msg.find(dir + "/magic.idx"), std::string::npos) << msg;
  EXPECT_NE(msg.find("bad magic"), std::string::npos) << msg;
  msg = error_of([&] { read_idx(dir + "/short.idx.gz"); });
  EXPECT_NE(msg.find(dir + "/short.idx.gz"), std::string::npos) << msg;
  EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;
  msg = error_of([&] { read_idx(dir + "/float.idx"); });
  EXPECT_NE(msg.find("0xd"), std::string::npos) << msg;
  msg = error_of([&] { read_idx(dir + "/missing.gz"); });
  EXPECT_NE(msg.find(dir + "/missing.gz"), std::string::npos) << msg;
}

TEST(VisionIdx, DatasetGivesNormalisedImagesAndLabels) {
  const auto dir = make_temp_dir("vision-idx-ds");
  write_gz(dir + "/img.gz", idx_bytes({3, 4, 4}, iota_bytes(48)));
  write_gz(dir + "/lab.gz", idx_bytes({3}, {2, 0, 9}));
  const auto options =
      ImageTransformOptions().image_size(4).channels(1).augment(false).mean({0.5}).std({0.25});
  IdxImageDataset ds(dir + "/img.gz", dir + "/lab.gz", options);
  EXPECT_EQ(ds.size(), 3u);
  EXPECT_EQ(ds.num_classes(), 10);
  const auto e = ds.get(1, 123);
  EXPECT_EQ(e.label, 0);
  ASSERT_EQ(e.source.sizes(), (std::vector<int64_t>{1, 4, 4}));
  const auto data = iota_bytes(48);
  const auto raw = torch::tensor(std::vector<int64_t>(data.begin() + 16, data.begin() + 32))
                       .to(torch::kFloat)
                       .view({1, 4, 4});
  EXPECT_TRUE(tensors_close("normalised pixels", e.source, (raw / 255.0 - 0.5) / 0.25, 1e-6));
  EXPECT_NE(ds.describe(2).find("img.gz#2"), std::string::npos);
  // Grey to 3 channels, resized to 8x8.
  IdxImageDataset rgb(dir + "/img.gz", "", ImageTransformOptions().image_size(8).augment(false));
  EXPECT_EQ(rgb.get(0, 0).source.sizes(), (std::vector<int64_t>{3, 8, 8}));
  EXPECT_EQ(rgb.get(0, 0).label, -1);
  EXPECT_EQ(rgb.num_classes(), 0);
  // Collation stacks into a batch.
  const auto batch = ds.collate({ds.get(0, 1), ds.get(2, 1)});
  EXPECT_EQ(batch.input.source.sizes(), (std::vector<int64_t>{2, 1, 4, 4}));
  EXPECT_TRUE(batch.labels.equal(torch::tensor({2, 9}, torch::kLong)));

  write_gz(dir + "/lab_short.gz", idx_bytes({2}, {1, 2}));
  const auto msg =
      error_of([&] { IdxImageDataset(dir + "/img.gz", dir + "/lab_short.gz", options); });
  EXPECT_NE(msg.find("lab_short.gz"), std::string::npos) << msg;
}

TEST(VisionIdx, LabelsOutsideTheTenClassesNameTheFile) {
  // Fashion-MNIST has ten classes: a 200 in its labels is damage, not a 201st class.
  const auto root = make_temp_dir("vision-idx-labels");
  write_gz(root + "/train-images-idx3-ubyte.gz", idx_bytes({3, 4, 4}, iota_bytes(48)));
  write_gz(root + "/train-labels-idx1-ubyte.gz", idx_bytes({3}, {2, 200, 9}));
  const auto msg = error_of([&] { IdxImageDataset::load_fashion_mnist(root, /*train=*/true); });
  EXPECT_NE(msg.find(root + "/train-labels-idx1-ubyte.gz"), std::string::npos) << msg;
  EXPECT_NE(msg.find("200"), std::string::npos) << msg;
  EXPECT_NE(msg.find("index 1"), std::string::npos) << msg;
}

TEST(VisionImageFolder, ReadsPngJpegAndFlagsCorruptFiles) {
  const auto root = make_temp_dir("vision-folder");
  fs::create_directories(root + "/cat");
  fs::create_directories(root + "/ant");
  // A 6x4 RGB PNG with known pixels, a 5x5 grey JPEG, and a corrupt "PNG".
  std::vector<uint8_t> rgb(4 * 6 * 3);
  for (size_t i = 0; i < rgb.size(); ++i) rgb[i] = uint8_t(i * 5);
  ASSERT_TRUE(stbi_write_png((root + "/cat/b.png").c_str(), 6, 4, 3, rgb.data(), 6 * 3));
  std::vector<uint8_t> grey(25, 128);
  ASSERT_TRUE(stbi_write_jpg((root + "/ant/a.jpg").c_str(), 5, 5, 1, grey.data(), 95));
  write_plain(root + "/cat/c.png", "this is not a png");
  write_plain(root + "/cat/notes.txt", "ignored");

  ImageFolderDataset ds(root,
                        ImageTransformOptions().image_size(4).augment(false).mean({0}).std({1}));
  ASSERT_EQ(ds.size(), 3u);
  EXPECT_EQ(ds.classes(), (std::vector<std::string>{"ant", "cat"}));
  EXPECT_EQ(ds.num_classes(), 2);
  EXPECT_EQ(ds.file_labels(), (std::vector<int64_t>{0, 1, 1}));
  EXPECT_EQ(fs::path(ds.describe(1)).filename(), "b.png");

  // The PNG decodes exactly: [C,H,W] of the interleaved bytes; the centre 4x4 crop is columns 1-4.
  const auto png = decode_image_file(ds.describe(1), 3);
  const auto expected = torch::tensor(std::vector<int64_t>(rgb.begin(), rgb.end()))
                            .to(torch::kUInt8)
                            .view({4, 6, 3})
                            .permute({2, 0, 1});
  EXPECT_TRUE(png.equal(expected));
  const auto e = ds.get(1, 0);
  EXPECT_EQ(e.label, 1);
  EXPECT_TRUE(tensors_close("png centre crop", e.source,
                            expected.slice(2, 1, 5).to(torch::kFloat) / 255.0, 1e-6));
  // The grey JPEG comes back as 3 channels near 128/255.
  const auto jpg = ds.get(0, 0);
  ASSERT_EQ(jpg.source.sizes(), (std::vector<int64_t>{3, 4, 4}));
  EXPECT_NEAR(jpg.source.mean().item<double>(), 128.0 / 255.0, 0.02);
  EXPECT_EQ(decode_image_file(ds.describe(0), 1).sizes(), (std::vector<int64_t>{1, 5, 5}));

  try {
    ds.get(2, 0);
    FAIL() << "expected BadSample";
  } catch (const data2vec::BadSample& bad) {
    EXPECT_NE(std::string(bad.what()).find(root + "/cat/c.png"), std::string::npos) << bad.what();
  }
  EXPECT_THROW(ImageFolderDataset(root + "/missing", ImageTransformOptions()), c10::Error);
}

TEST(VisionImageFolder, AClassFolderIsReadWithItsSubFoldersAndWithoutDotFiles) {
  // As torchvision's ImageFolder walks a class (os.walk, links followed): images in sub-folders
  // were left out before, and a macOS "._" fork beside each image was a corrupt sample.
  const auto root = make_temp_dir("vision-folder-nested");
  const std::vector<uint8_t> pixel = {1, 2, 3};
  for (const char* path : {"cat/a.png", "cat/2019/b.PNG", "cat/2020/raw/c.png", "dog/d.png"}) {
    fs::create_directories(fs::path(root + "/" + path).parent_path());
    ASSERT_TRUE(stbi_write_png((root + "/" + path).c_str(), 1, 1, 3, pixel.data(), 3));
  }
  std::ofstream(root + "/cat/._a.png") << "\x00\x05\x16\x07 Mac OS X";
  std::ofstream(root + "/cat/notes.txt") << "not an image";
  const ImageFolderDataset ds(root, ImageTransformOptions().image_size(1).augment(false));
  ASSERT_EQ(ds.size(), 4u);
  EXPECT_EQ(ds.describe(0), root + "/cat/2019/b.PNG");
  EXPECT_EQ(ds.describe(1), root + "/cat/2020/raw/c.png");
  EXPECT_EQ(ds.describe(2), root + "/cat/a.png");
  EXPECT_EQ(ds.file_labels(), (std::vector<int64_t>{0, 0, 0, 1}));
}

TEST(VisionImageFolder, AHeldOutSplitIsLabelledByTheTrainingSplitsClasses) {
  // Before, each split numbered its own sorted folders: val/ without 'dog' labelled its foxes as
  // dogs, and a hidden .ipynb_checkpoints folder in train/ shifted every label by one.
  const auto root = make_temp_dir("vision-folder-classes");
  const std::vector<uint8_t> pixel = {1, 2, 3};
  for (const char* path : {"train/cat/a.png", "train/dog/b.png", "train/fox/c.png",
                           "val/cat/d.png", "val/fox/e.png"}) {
    fs::create_directories(fs::path(root + "/" + path).parent_path());
    ASSERT_TRUE(stbi_write_png((root + "/" + path).c_str(), 1, 1, 3, pixel.data(), 3));
  }
  fs::create_directories(root + "/train/.ipynb_checkpoints");
  const auto options = ImageTransformOptions().image_size(1).augment(false).mean({0}).std({1});
  const ImageFolderDataset train(root + "/train", options);
  EXPECT_EQ(train.classes(), (std::vector<std::string>{"cat", "dog", "fox"}));
  const ImageFolderDataset val(root + "/val", options, train.classes());
  EXPECT_EQ(val.num_classes(), 3);
  EXPECT_EQ(val.file_labels(), (std::vector<int64_t>{0, 2}));  // cat, fox: not 0, 1
  EXPECT_EQ(val.get(1, 0).label, 2);
  // A class the training split lacks cannot be scored: an error naming it.
  fs::create_directories(root + "/val/wolf");
  try {
    ImageFolderDataset(root + "/val", options, train.classes());
    FAIL() << "expected an error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("class folder 'wolf' is not one of the training split's "
                                         "classes (cat, dog, fox)"),
              std::string::npos)
        << e.what();
  }
}

TEST(VisionImageDecode, A16BitPngReadsAsItsHighBytesNotAsLinearLight) {
  // libpng's simplified reader takes 16-bit samples without a colour-space chunk as linear light
  // and gamma-encodes them to 8 bits (0x4000 came out as 137, not 64): such a photo read brighter
  // than the same picture in 8 bits. Pillow keeps the high byte.
  const auto dir = make_temp_dir("vision-png16");
  const std::vector<uint16_t> rgb = {0x0000, 0x4000, 0x8000, 0xC0FF, 0xFFFF, 0x1234};
  write_png16(dir + "/deep.png", 2, 1, rgb);
  const auto image = decode_image_file(dir + "/deep.png", 3);  // [3,1,2]
  ASSERT_EQ(image.sizes(), (std::vector<int64_t>{3, 1, 2}));
  const auto flat = image.permute({1, 2, 0}).reshape({-1});
  for (size_t i = 0; i < rgb.size(); ++i) {
    EXPECT_NEAR(flat[int64_t(i)].item<int>(), rgb[i] >> 8, 1) << "sample " << i;
  }
}

TEST(VisionImageDecode, AJpegCutShortIsABadSampleNotAGreyImage) {
  // libjpeg-turbo decodes what is there and fills the rest with grey, with a warning; the image
  // was kept. Pillow refuses it, and so does the reader now.
  const auto dir = make_temp_dir("vision-jpeg-cut");
  std::vector<uint8_t> noise(64 * 64 * 3);
  for (size_t i = 0; i < noise.size(); ++i) noise[i] = uint8_t((i * 2654435761u) >> 13);
  const auto path = dir + "/cut.jpg";
  ASSERT_TRUE(stbi_write_jpg(path.c_str(), 64, 64, 3, noise.data(), 90));
  EXPECT_EQ(decode_image_file(path, 3).sizes(), (std::vector<int64_t>{3, 64, 64}));  // whole: fine
  fs::resize_file(path, fs::file_size(path) * 6 / 10);
  const auto message = error_of([&] { decode_image_file(path, 3); });
  EXPECT_NE(message.find("cannot decode image " + path), std::string::npos) << message;
  EXPECT_NE(message.find("Premature end"), std::string::npos) << message;
}

TEST(VisionImageDecode, ACmykJpegReadsAsPillowConvertsIt) {
  // Print-ready photos are CMYK JPEGs (Photoshop: Adobe's inverted CMYK, stored as YCCK). They
  // were refused ("Unsupported color conversion request"); Pillow reads them. Four 8x8 blocks of
  // one colour each, stored bytes as Photoshop writes them (255 = no ink), at quality 100.
  const auto dir = make_temp_dir("vision-cmyk");
  const std::vector<std::array<int, 4>> stored = {
      {255, 255, 255, 255}, {255, 0, 0, 255}, {40, 200, 120, 180}, {128, 128, 128, 60}};
  std::vector<uint8_t> pixels(16 * 16 * 4);
  for (int y = 0; y < 16; ++y) {
    for (int x = 0; x < 16; ++x) {
      const auto& colour = stored[size_t((y / 8) * 2 + x / 8)];
      for (int c = 0; c < 4; ++c) pixels[size_t((y * 16 + x) * 4 + c)] = uint8_t(colour[size_t(c)]);
    }
  }
  tjhandle encoder = tjInitCompress();
  unsigned char* jpeg = nullptr;
  unsigned long jpeg_size = 0;
  ASSERT_EQ(tjCompress2(encoder, pixels.data(), 16, 0, 16, TJPF_CMYK, &jpeg, &jpeg_size, TJSAMP_444,
                        100, 0),
            0)
      << tjGetErrorStr2(encoder);
  std::ofstream(dir + "/print.jpg", std::ios::binary)
      .write(reinterpret_cast<const char*>(jpeg), std::streamsize(jpeg_size));
  tjFree(jpeg);
  tjDestroy(encoder);

  const auto rgb = decode_image_file(dir + "/print.jpg", 3);  // [3,16,16]
  ASSERT_EQ(rgb.sizes(), (std::vector<int64_t>{3, 16, 16}));
  for (size_t block = 0; block < stored.size(); ++block) {
    const auto& [c, m, y, k] = stored[block];
    // Pillow: ink = 255 - stored byte, R = (255 - K) * (1 - C / 255) with 255 - K = stored k.
    const std::array<double, 3> expected = {k * c / 255.0, k * m / 255.0, k * y / 255.0};
    const int64_t row = int64_t(block / 2) * 8 + 4, col = int64_t(block % 2) * 8 + 4;
    for (int64_t ch = 0; ch < 3; ++ch) {
      EXPECT_NEAR(rgb[ch][row][col].item<int>(), expected[size_t(ch)], 2.0)
          << "block " << block << " channel " << ch;
    }
  }
  // As a grey image: the RGB above through Pillow's luma.
  EXPECT_EQ(decode_image_file(dir + "/print.jpg", 1).sizes(), (std::vector<int64_t>{1, 16, 16}));
}

// The colour model conversions are Pillow's: alpha dropped (not composited), RGB -> L as
// (19595 R + 38470 G + 7471 B + 2^15) >> 16; the format is what the bytes say, not the name.
TEST(VisionImageDecode, ConvertsColourModelsAsPillowDoesAndTrustsTheBytesNotTheName) {
  const auto dir = make_temp_dir("vision-decode");
  // 4 pixels, RGBA, the alpha of each different (0 = fully transparent).
  const std::vector<uint8_t> rgba = {255, 0, 0, 0, 0, 255, 0, 90, 0, 0, 255, 180, 10, 20, 30, 255};
  ASSERT_TRUE(stbi_write_png((dir + "/rgba.png").c_str(), 2, 2, 4, rgba.data(), 2 * 4));
  const auto rgb = decode_image_file(dir + "/rgba.png", 3);
  const auto expected_rgb = torch::tensor({255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30})
                                .to(torch::kUInt8)
                                .view({2, 2, 3})
                                .permute({2, 0, 1});
  EXPECT_TRUE(rgb.equal(expected_rgb)) << rgb;
  // By hand: red 76.74 -> 76, green 150.19 -> 150, blue 29.57 -> 29, (10,20,30) 18.65 -> 18.
  const auto luma = decode_image_file(dir + "/rgba.png", 1);
  EXPECT_TRUE(luma.equal(torch::tensor({76, 150, 29, 18}).to(torch::kUInt8).view({1, 2, 2})))
      << luma;
  // The same pixels as a BMP (stb's third decoder) and a grey PNG repeated to 3 channels.
  const std::vector<uint8_t> packed = {255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30};
  ASSERT_TRUE(stbi_write_bmp((dir + "/rgb.bmp").c_str(), 2, 2, 3, packed.data()));
  EXPECT_TRUE(decode_image_file(dir + "/rgb.bmp", 3).equal(expected_rgb));
  EXPECT_TRUE(decode_image_file(dir + "/rgb.bmp", 1).equal(luma));
  const std::vector<uint8_t> grey = {0, 60, 120, 250};
  ASSERT_TRUE(stbi_write_png((dir + "/grey.png").c_str(), 2, 2, 1, grey.data(), 2));
  const auto grey3 = decode_image_file(dir + "/grey.png", 3);
  EXPECT_TRUE(grey3.equal(
      torch::tensor({0, 60, 120, 250}).to(torch::kUInt8).view({1, 2, 2}).expand({3, 2, 2})));
  // A JPEG saved as .png decodes as the JPEG it is; bytes of no known format are named.
  std::vector<uint8_t> flat(8 * 8 * 3, 200);
  ASSERT_TRUE(stbi_write_jpg((dir + "/really-a-jpeg.png").c_str(), 8, 8, 3, flat.data(), 95));
  const auto jpeg = decode_image_file(dir + "/really-a-jpeg.png", 3);
  EXPECT_EQ(jpeg.sizes(), (std::vector<int64_t>{3, 8, 8}));
  EXPECT_LE((jpeg.to(torch::kInt) - 200).abs().max().item<int>(), 2);
  write_plain(dir + "/gif.png", "GIF89a\x01\x00\x01\x00");
  const auto message = error_of([&] { decode_image_file(dir + "/gif.png", 3); });
  EXPECT_NE(message.find(dir + "/gif.png"), std::string::npos) << message;
  EXPECT_NE(message.find("not a PNG, JPEG or BMP"), std::string::npos) << message;
}

TEST(VisionAugment, FlipAndNormalise) {
  const auto img = torch::arange(12, torch::kFloat).view({1, 3, 4});
  EXPECT_TRUE(hflip(img).equal(torch::tensor({3., 2., 1., 0., 7., 6., 5., 4., 11., 10., 9., 8.})
                                   .to(torch::kFloat)
                                   .view({1, 3, 4})));
  const auto three = torch::ones({3, 2, 2});
  const auto n = normalize(three, {0.5, 0.25, 0.0}, {0.5, 0.25, 2.0});
  EXPECT_TRUE(tensors_close("channel 0", n[0], torch::full({2, 2}, 1.0), 1e-6));
  EXPECT_TRUE(tensors_close("channel 1", n[1], torch::full({2, 2}, 3.0), 1e-6));
  EXPECT_TRUE(tensors_close("channel 2", n[2], torch::full({2, 2}, 0.5), 1e-6));
  EXPECT_THROW(normalize(three, {0.1, 0.2}, {1.0}), c10::Error);
  const auto u8 = torch::tensor({0, 51, 255}, torch::kUInt8).view({1, 1, 3});
  EXPECT_TRUE(tensors_close("to float", to_float_image(u8),
                            torch::tensor({0.0, 0.2, 1.0}).view({1, 1, 3}), 1e-7));
}

TEST(VisionAugment, DeterministicPerSeedWithRightShapes) {
  const auto img = (torch::rand({1, 28, 28}) * 255).to(torch::kUInt8);
  const auto o = fashion_mnist_transform(/*augment=*/true);
  const auto a = transform_image(img, o, 42);
  EXPECT_EQ(a.sizes(), (std::vector<int64_t>{1, 28, 28}));
  EXPECT_EQ(a.scalar_type(), torch::kFloat);
  EXPECT_TRUE(a.equal(transform_image(img, o, 42)));
  int differ = 0;
  for (uint64_t s = 1; s <= 10; ++s) differ += !a.equal(transform_image(img, o, 42 + s));
  EXPECT_GE(differ, 9);
  // Larger output, 3 equal channels from grey (normalised alike).
  const auto big =
      transform_image(img, ImageTransformOptions().image_size(56).mean({0.5}).std({0.2}), 1);
  EXPECT_EQ(big.sizes(), (std::vector<int64_t>{3, 56, 56}));
  EXPECT_TRUE(big[0].equal(big[2]));
}

TEST(VisionAugment, CropBoxesStayInRange) {
  const auto o = ImageTransformOptions().crop_scale_min(0.35);
  Rng rng(9);
  for (int i = 0; i < 500; ++i) {
    const auto box = sample_resized_crop(28, 40, o, rng);
    ASSERT_GE(box.top, 0);
    ASSERT_GE(box.left, 0);
    ASSERT_LE(box.top + box.height, 28);
    ASSERT_LE(box.left + box.width, 40);
    const double area = double(box.height * box.width) / (28.0 * 40.0);
    // Rounding of the sides moves the area a little outside [0.35, 1].
    EXPECT_GE(area, 0.30);
    const double ratio = double(box.width) / double(box.height);
    EXPECT_GT(ratio, 0.6);
    EXPECT_LT(ratio, 1.6);
  }
  // Scale 1 and ratio 1 of a square image: the full image, and resizing to its own size is exact.
  const auto full = ImageTransformOptions().crop_scale_min(1.0).crop_ratio_min(1).crop_ratio_max(1);
  const auto box = sample_resized_crop(28, 28, full, rng);
  EXPECT_EQ(box.height, 28);
  EXPECT_EQ(box.width, 28);
  const auto img = torch::rand({1, 28, 28});
  EXPECT_TRUE(resized_crop(img, box, 28).equal(img));
  // Bilinear 2x downscale of a 2x2 constant block image averages each block.
  const auto blocks = torch::tensor({1.f, 1.f, 3.f, 3.f}).view({1, 1, 4}).expand({1, 4, 4});
  EXPECT_TRUE(tensors_close("downscale", resized_crop(blocks.contiguous(), {0, 0, 4, 4}, 2),
                            torch::tensor({1.f, 3.f, 1.f, 3.f}).view({1, 2, 2}), 1e-6));
}
