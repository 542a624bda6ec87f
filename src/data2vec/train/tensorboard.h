// TensorBoard scalars without TensorFlow or protobuf: a TFRecord file of hand-encoded `Event`
// messages that `tensorboard --logdir` reads as it would one written by PyTorch's SummaryWriter.
// scripts/read_tfevents.py reads the same files back in pure Python.
#pragma once

#include <cstddef>
#include <cstdint>
#include <fstream>
#include <string>

namespace data2vec::train {

// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum TFRecord framing uses.
uint32_t crc32c(const void* data, size_t size);

// TFRecord stores ((crc >> 15) | (crc << 17)) + 0xa282ead8 so a CRC of CRC-bearing data differs.
uint32_t masked_crc32c(const void* data, size_t size);

// Seconds since the Unix epoch, with sub-second precision: the default event wall time.
double wall_clock_seconds();

// Appends scalar events to `<log_dir>/events.out.tfevents.<unix time>.<hostname>`. Each writer
// opens a file of its own (a resumed run gets a new one; TensorBoard merges every events file
// in a directory), so an earlier run's file is never rewritten.
class TensorBoardWriter {
 public:
  // Creates `log_dir` if needed and writes the leading `file_version: "brain.Event:2"` record.
  explicit TensorBoardWriter(const std::string& log_dir);
  ~TensorBoardWriter();
  TensorBoardWriter(const TensorBoardWriter&) = delete;
  TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;

  // One event holding one scalar (stored as float32, as TensorBoard's simple_value is).
  void add_scalar(const std::string& tag, double value, int64_t step,
                  double wall_time = wall_clock_seconds());

  // Pushes buffered events to the OS; call once per logged step. Throws if a write failed.
  void flush();

  // The events file this writer appends to.
  const std::string& path() const { return path_; }

 private:
  void write_record(const std::string& data);

  std::string path_;
  std::ofstream out_;
};

}  // namespace data2vec::train
