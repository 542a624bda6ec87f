#include "data2vec/vision/idx.h"

#include <zlib.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <memory>
#include <vector>

namespace data2vec::vision {

namespace {

struct GzCloser {
  void operator()(gzFile_s* f) const { gzclose(f); }
};

// Reads exactly `size` bytes; returns how many were read before the end of the stream.
size_t read_fully(gzFile file, uint8_t* data, size_t size, const std::string& path) {
  size_t done = 0;
  while (done < size) {
    const auto chunk = unsigned(std::min<size_t>(size - done, size_t(INT_MAX / 2)));
    const int got = gzread(file, data + done, chunk);
    if (got < 0) {
      int errnum = 0;
      const char* message = gzerror(file, &errnum);
      TORCH_CHECK(false, "IDX file ", path, ": read error (", message,
                  "); is the .gz file complete?");
    }
    if (got == 0) break;
    done += size_t(got);
  }
  return done;
}

}  // namespace

torch::Tensor read_idx(const std::string& path) {
  std::unique_ptr<gzFile_s, GzCloser> file(gzopen(path.c_str(), "rb"));
  TORCH_CHECK(file, "IDX file ", path, ": cannot open (missing? for Fashion-MNIST run ",
              "scripts/fetch-data.sh fashion-mnist)");
  uint8_t magic[4];
  TORCH_CHECK(read_fully(file.get(), magic, 4, path) == 4, "IDX file ", path,
              ": truncated header (fewer than 4 bytes)");
  TORCH_CHECK(magic[0] == 0 && magic[1] == 0 && magic[3] >= 1, "IDX file ", path,
              ": bad magic number (bytes ", int(magic[0]), " ", int(magic[1]), " ", int(magic[2]),
              " ", int(magic[3]), "); expected 0 0 <type> <ndims>: not an IDX file");
  TORCH_CHECK(magic[2] == 0x08, "IDX file ", path, ": element type 0x", std::hex, int(magic[2]),
              std::dec, " is not supported (only 0x08 = uint8)");
  const int ndims = magic[3];
  std::vector<uint8_t> header(size_t(ndims) * 4);
  TORCH_CHECK(read_fully(file.get(), header.data(), header.size(), path) == header.size(),
              "IDX file ", path, ": truncated header (", ndims, " dims announced)");
  std::vector<int64_t> sizes(ndims);
  int64_t numel = 1;
  for (int d = 0; d < ndims; ++d) {
    const uint8_t* b = header.data() + 4 * d;
    sizes[d] = (int64_t(b[0]) << 24) | (int64_t(b[1]) << 16) | (int64_t(b[2]) << 8) | b[3];
    TORCH_CHECK(!__builtin_mul_overflow(numel, sizes[d], &numel), "IDX file ", path, ": dims ",
                c10::IntArrayRef(sizes.data(), size_t(d) + 1),
                " announce more elements than 64 bits can count: not an IDX file");
  }
  // The body is read in growing chunks, not allocated from the header up front: a damaged header
  // announcing terabytes then fails as truncated instead of exhausting memory.
  std::vector<uint8_t> body;
  size_t got = 0;
  while (got < size_t(numel)) {
    const size_t want = std::min<size_t>(size_t(numel), std::max<size_t>(2 * got, 1 << 20));
    body.resize(want);
    const size_t chunk = read_fully(file.get(), body.data() + got, want - got, path);
    got += chunk;
    if (got < want) break;
  }
  TORCH_CHECK(got == size_t(numel), "IDX file ", path, ": truncated, ", got, " of ", numel,
              " data bytes for dims ", c10::IntArrayRef(sizes));
  auto out = torch::empty(sizes, torch::kUInt8);
  if (numel > 0) std::memcpy(out.data_ptr<uint8_t>(), body.data(), size_t(numel));
  return out;
}

}  // namespace data2vec::vision
