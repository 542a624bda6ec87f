#include "data2vec/io/files.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace data2vec::io {

namespace {

[[noreturn]] void fail(const std::string& what, const std::string& path) {
  throw std::runtime_error(what + " '" + path + "': " + std::strerror(errno));
}

}  // namespace

void fsync_path(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) fail("cannot open for fsync", path);
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) fail("fsync failed on", path);
}

void write_file_atomically(const std::string& path, const std::string& bytes) {
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) fail("cannot create", tmp);
  // On any failure (a full disk, a file-size limit) the partial temporary goes too: left behind
  // it would hold the space that is missing and look like a file to the next reader.
  auto give_up = [&](const char* what, bool still_open) {
    const int error = errno;
    if (still_open) ::close(fd);
    ::unlink(tmp.c_str());
    errno = error;
    fail(what, tmp);
  };
  size_t written = 0;
  while (written < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + written, bytes.size() - written);
    if (n < 0) {
      if (errno == EINTR) continue;
      give_up("write failed on", true);
    }
    written += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) give_up("fsync failed on", true);
  if (::close(fd) != 0) give_up("close failed on", false);
  std::error_code renamed;
  std::filesystem::rename(tmp, path, renamed);
  if (renamed) {
    ::unlink(tmp.c_str());
    throw std::runtime_error("cannot rename '" + tmp + "' to '" + path + "': " + renamed.message());
  }
  const auto parent = std::filesystem::absolute(path).parent_path();
  fsync_path(parent.string());
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot read", path);
  std::ostringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

}  // namespace data2vec::io
