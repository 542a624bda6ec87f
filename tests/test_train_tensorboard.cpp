// TensorBoard event files: CRC-32C against published vectors, the TFRecord framing and the
// protobuf fields decoded back by a parser written here, and the same file read by
// scripts/read_tfevents.py.
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "data2vec/train/tensorboard.h"
#include "support.h"

namespace {

using data2vec::train::crc32c;
using data2vec::train::masked_crc32c;
using data2vec::train::TensorBoardWriter;

// Bit-at-a-time CRC-32C: the definition, to check the table-driven one on random data.
uint32_t crc32c_bitwise(const std::string& bytes) {
  uint32_t crc = 0xFFFFFFFFu;
  for (unsigned char byte : bytes) {
    crc ^= byte;
    for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
  }
  return ~crc;
}

uint64_t read_le(const std::string& bytes, size_t offset, int width) {
  uint64_t value = 0;
  for (int i = 0; i < width; ++i) {
    value |= static_cast<uint64_t>(static_cast<unsigned char>(bytes.at(offset + i))) << (8 * i);
  }
  return value;
}

// One protobuf field: number, wire type, and the varint or the raw bytes.
struct Field {
  uint32_t number = 0;
  uint32_t wire = 0;
  uint64_t varint = 0;
  std::string bytes;
};

uint64_t read_varint(const std::string& buf, size_t& pos) {
  uint64_t result = 0;
  for (int shift = 0;; shift += 7) {
    const auto byte = static_cast<unsigned char>(buf.at(pos++));
    result |= static_cast<uint64_t>(byte & 0x7F) << shift;
    if (!(byte & 0x80)) return result;
  }
}

std::vector<Field> parse_fields(const std::string& buf) {
  std::vector<Field> fields;
  size_t pos = 0;
  while (pos < buf.size()) {
    const uint64_t key = read_varint(buf, pos);
    Field field;
    field.number = static_cast<uint32_t>(key >> 3);
    field.wire = static_cast<uint32_t>(key & 7);
    size_t length = 0;
    switch (field.wire) {
      case 0:
        field.varint = read_varint(buf, pos);
        break;
      case 1:
        length = 8;
        break;
      case 2:
        length = read_varint(buf, pos);
        break;
      case 5:
        length = 4;
        break;
      default:
        ADD_FAILURE() << "unexpected wire type " << field.wire;
        return fields;
    }
    if (field.wire != 0) {
      field.bytes = buf.substr(pos, length);
      EXPECT_EQ(field.bytes.size(), length) << "field " << field.number << " runs past the end";
      pos += length;
    }
    fields.push_back(field);
  }
  return fields;
}

// Reads every record, asserting the framing: lengths in range and both masked CRCs right.
std::vector<std::string> read_records(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string blob = buffer.str();
  std::vector<std::string> records;
  size_t offset = 0;
  while (offset < blob.size()) {
    EXPECT_LE(offset + 12, blob.size()) << "truncated header at " << offset;
    if (offset + 12 > blob.size()) break;
    const uint64_t length = read_le(blob, offset, 8);
    EXPECT_EQ(read_le(blob, offset + 8, 4), masked_crc32c(blob.data() + offset, 8))
        << "length CRC at " << offset;
    const size_t start = offset + 12;
    EXPECT_LE(start + length + 4, blob.size()) << "truncated data at " << offset;
    if (start + length + 4 > blob.size()) break;
    const std::string data = blob.substr(start, length);
    EXPECT_EQ(read_le(blob, start + length, 4), masked_crc32c(data.data(), data.size()))
        << "data CRC at " << offset;
    EXPECT_EQ(crc32c(data.data(), data.size()), crc32c_bitwise(data));
    records.push_back(data);
    offset = start + length + 4;
  }
  return records;
}

double as_double(const std::string& bytes) {
  const uint64_t bits = read_le(bytes, 0, 8);
  double value = 0;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}

float as_float(const std::string& bytes) {
  const auto bits = static_cast<uint32_t>(read_le(bytes, 0, 4));
  float value = 0;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}

struct Scalar {
  std::string tag;
  int64_t step;
  float value;
  double wall_time;
};

// The events a writer produced: {tag, step, value} in order.
const std::vector<Scalar> kWritten = {
    {"loss", 0, 2.5f, 1000.25},
    {"lr", 0, 1.0e-4f, 1000.25},
    {"loss", 1, 0.1f, 1001.5},
    {"target_std", 1, 0.75f, 1001.5},
    {"loss", 1234567890123, -3.25f, 2e9},
    {"eval/knn_acc", -7, 0.875f, 2e9 + 0.5},
};

std::string write_events(const std::string& dir) {
  TensorBoardWriter writer(dir);
  for (const auto& s : kWritten) writer.add_scalar(s.tag, s.value, s.step, s.wall_time);
  writer.flush();
  return writer.path();
}

TEST(Crc32c, KnownVectors) {
  const std::string digits = "123456789";
  EXPECT_EQ(crc32c(digits.data(), digits.size()), 0xE3069283u);
  const std::string zeros(32, '\0');
  EXPECT_EQ(crc32c(zeros.data(), zeros.size()), 0x8A9136AAu);
  const std::string ones(32, '\xff');  // RFC 3720 B.4
  EXPECT_EQ(crc32c(ones.data(), ones.size()), 0x62A8AB43u);
  EXPECT_EQ(crc32c(nullptr, 0), 0u);
}

TEST(Crc32c, MatchesBitwiseDefinitionAndMask) {
  std::mt19937 rng(3);
  for (int n : {1, 7, 64, 1000}) {
    std::string bytes(n, '\0');
    for (auto& c : bytes) c = static_cast<char>(rng() & 0xFF);
    const uint32_t crc = crc32c_bitwise(bytes);
    EXPECT_EQ(crc32c(bytes.data(), bytes.size()), crc) << "n=" << n;
    EXPECT_EQ(masked_crc32c(bytes.data(), bytes.size()),
              static_cast<uint32_t>(((crc >> 15) | (crc << 17)) + 0xa282ead8u));
  }
}

TEST(TensorBoardWriter, FileNameAndFreshFilePerWriter) {
  const auto dir = data2vec::testing::make_temp_dir("tb-name") + "/nested/tb";
  const std::string first = write_events(dir);
  const std::string second = write_events(dir);  // a resumed run in the same second
  EXPECT_NE(first, second);
  char host[256] = {};
  ASSERT_EQ(::gethostname(host, sizeof host - 1), 0);
  const std::string name = std::filesystem::path(first).filename().string();
  EXPECT_EQ(name.rfind("events.out.tfevents.", 0), 0u) << name;
  EXPECT_NE(name.find(std::string(".") + host), std::string::npos) << name;
  // Both files hold the full set: the second writer did not touch the first file.
  EXPECT_EQ(read_records(first).size(), kWritten.size() + 1);
  EXPECT_EQ(read_records(second).size(), kWritten.size() + 1);
}

TEST(TensorBoardWriter, RecordsDecodeToEvents) {
  const auto path = write_events(data2vec::testing::make_temp_dir("tb-decode"));
  const auto records = read_records(path);
  ASSERT_EQ(records.size(), kWritten.size() + 1);

  // Record 0: wall_time and file_version, nothing else.
  const auto header = parse_fields(records[0]);
  ASSERT_EQ(header.size(), 2u);
  EXPECT_EQ(header[0].number, 1u);
  EXPECT_EQ(header[0].wire, 1u);
  EXPECT_NEAR(as_double(header[0].bytes), data2vec::train::wall_clock_seconds(), 60.0);
  EXPECT_EQ(header[1].number, 3u);
  EXPECT_EQ(header[1].bytes, "brain.Event:2");

  for (size_t i = 0; i < kWritten.size(); ++i) {
    SCOPED_TRACE("event " + std::to_string(i));
    const auto event = parse_fields(records[i + 1]);
    ASSERT_EQ(event.size(), 3u);
    EXPECT_EQ(event[0].number, 1u);
    EXPECT_EQ(as_double(event[0].bytes), kWritten[i].wall_time);
    EXPECT_EQ(event[1].number, 2u);
    EXPECT_EQ(event[1].wire, 0u);
    EXPECT_EQ(static_cast<int64_t>(event[1].varint), kWritten[i].step);
    EXPECT_EQ(event[2].number, 5u);
    EXPECT_EQ(event[2].wire, 2u);
    const auto summary = parse_fields(event[2].bytes);
    ASSERT_EQ(summary.size(), 1u);
    EXPECT_EQ(summary[0].number, 1u);
    const auto value = parse_fields(summary[0].bytes);
    ASSERT_EQ(value.size(), 2u);
    EXPECT_EQ(value[0].number, 1u);
    EXPECT_EQ(value[0].bytes, kWritten[i].tag);
    EXPECT_EQ(value[1].number, 2u);
    EXPECT_EQ(value[1].wire, 5u);
    EXPECT_EQ(as_float(value[1].bytes), kWritten[i].value);
  }
}

TEST(TensorBoardWriter, PythonReaderAgrees) {
  if (!std::filesystem::exists("/usr/bin/python3")) GTEST_SKIP() << "/usr/bin/python3 missing";
  const auto path = write_events(data2vec::testing::make_temp_dir("tb-python"));
  const std::string script = std::string(DATA2VEC_SOURCE_DIR) + "/scripts/read_tfevents.py";
  ASSERT_TRUE(std::filesystem::exists(script)) << script;
  const std::string command = "/usr/bin/python3 '" + script + "' '" + path + "' 2>&1";
  FILE* pipe = ::popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string output;
  char chunk[512];
  while (size_t n = std::fread(chunk, 1, sizeof chunk, pipe)) output.append(chunk, n);
  const int status = ::pclose(pipe);
  ASSERT_EQ(status, 0) << output;

  std::istringstream lines(output);
  std::string line;
  size_t i = 0;
  while (std::getline(lines, line)) {
    ASSERT_LT(i, kWritten.size()) << "extra line: " << line;
    const auto c1 = line.find(',');
    const auto c2 = line.find(',', c1 + 1);
    ASSERT_NE(c2, std::string::npos) << line;
    EXPECT_EQ(line.substr(0, c1), kWritten[i].tag);
    EXPECT_EQ(std::stoll(line.substr(c1 + 1, c2 - c1 - 1)), kWritten[i].step) << line;
    // %.9g round-trips float32 exactly.
    EXPECT_EQ(static_cast<float>(std::stod(line.substr(c2 + 1))), kWritten[i].value) << line;
    ++i;
  }
  EXPECT_EQ(i, kWritten.size()) << output;
}

TEST(TensorBoardWriter, PythonReaderRejectsCorruptFile) {
  if (!std::filesystem::exists("/usr/bin/python3")) GTEST_SKIP() << "/usr/bin/python3 missing";
  const auto path = write_events(data2vec::testing::make_temp_dir("tb-corrupt"));
  {
    std::fstream file(path, std::ios::in | std::ios::out | std::ios::binary);
    file.seekp(-6, std::ios::end);  // inside the last record's data
    file.put('\x5a');
  }
  const std::string script = std::string(DATA2VEC_SOURCE_DIR) + "/scripts/read_tfevents.py";
  const std::string command = "/usr/bin/python3 '" + script + "' '" + path + "' >/dev/null 2>&1";
  const int status = std::system(command.c_str());
  EXPECT_NE(status, 0) << "a flipped byte must fail the CRC check";
}

}  // namespace
