#include "data2vec/io/files.h"

#include <fcntl.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
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

namespace {

// Every byte to `fd`; false (errno set) on the first failed write.
bool write_all(int fd, const std::string& bytes) {
  size_t written = 0;
  while (written < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + written, bytes.size() - written);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    written += static_cast<size_t>(n);
  }
  return true;
}

// A pipe, a terminal or a device (`--output /dev/stdout`, a FIFO a reader waits on) cannot be
// replaced by renaming a file over it: the bytes go straight to it.
void write_to_special_file(const std::string& path, const std::string& bytes) {
  const int fd = ::open(path.c_str(), O_WRONLY);
  if (fd < 0) fail("cannot open", path);
  if (!write_all(fd, bytes)) {
    const int error = errno;
    ::close(fd);
    errno = error;
    fail("write failed on", path);
  }
  if (::close(fd) != 0) fail("close failed on", path);
}

}  // namespace

void write_file_atomically(const std::string& path_given, const std::string& bytes) {
  namespace fs = std::filesystem;
  std::error_code ec;
  // Through a symbolic link the file it points to is what gets written, as `>` would; the
  // link itself stays.
  fs::path resolved = path_given;
  for (int hops = 0; fs::is_symlink(fs::symlink_status(resolved, ec)); ++hops) {
    if (hops == 40) throw std::runtime_error("too many levels of links at '" + path_given + "'");
    const auto target = fs::read_symlink(resolved, ec);
    if (ec) throw std::runtime_error("cannot read the link '" + path_given + "': " + ec.message());
    resolved = target.is_absolute() ? target : resolved.parent_path() / target;
  }
  const std::string path = resolved.string();
  const auto status = fs::status(path, ec);
  if (fs::exists(status)) {
    if (fs::is_directory(status))
      throw std::runtime_error("cannot write '" + path_given + "': it is a directory");
    if (!fs::is_regular_file(status)) return write_to_special_file(path, bytes);
  }
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
  if (!write_all(fd, bytes)) give_up("write failed on", true);
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

void check_output_path(const std::string& path, const std::string& flag) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_directory(path, ec))
    throw std::invalid_argument(flag + " '" + path + "' is a directory; give a file name");
  const auto parent = fs::absolute(path, ec).parent_path();
  if (!fs::is_directory(parent, ec))
    throw std::invalid_argument(flag + " '" + path + "': the folder '" + parent.string() +
                                "' does not exist");
}

std::string read_file(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw std::runtime_error("cannot read '" + path + "': it is a directory");
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot read", path);
  std::ostringstream buffer;
  try {
    buffer << in.rdbuf();
  } catch (const std::exception& e) {  // libstdc++'s filebuf throws on a read error (EIO)
    throw std::runtime_error("cannot read '" + path + "': " + e.what());
  }
  if (in.bad()) fail("cannot read", path);
  return buffer.str();
}

namespace {

bool has_extension(const std::filesystem::path& path, const std::vector<std::string>& extensions) {
  if (extensions.empty()) return true;
  auto ext = path.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return std::find(extensions.begin(), extensions.end(), ext) != extensions.end();
}

}  // namespace

std::vector<std::filesystem::path> list_files(const std::string& root,
                                              const std::vector<std::string>& extensions) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::exists(root, ec)) {
    throw std::runtime_error("'" + root + "' " +
                             (ec ? "cannot be read: " + ec.message() : "does not exist"));
  }
  if (!fs::is_directory(root, ec)) return {fs::path(root)};
  std::vector<fs::path> files;
  std::set<fs::path> folders_read;  // canonical paths: each folder once, a link loop ends
  // Real sub-folders are read before links are followed, so a file's name does not depend on
  // the order the directory lists a folder and a link to it in: the real path wins.
  std::deque<fs::path> links;
  // `real` is the folder's canonical path: resolved once for the root and each link, extended by
  // a name for a real sub-folder (resolving every folder anew costs the cube of the depth).
  const std::function<void(const fs::path&, const fs::path&)> read_folder =
      [&](const fs::path& folder, const fs::path& real) {
        if (!folders_read.insert(real).second) return;
        std::error_code error;
        std::vector<fs::directory_entry> entries;
        fs::directory_iterator it(folder, error);
        for (; !error && it != fs::directory_iterator(); it.increment(error)) {
          entries.push_back(*it);
        }
        if (error) spdlog::warn("skipping the folder '{}': {}", folder.string(), error.message());
        std::sort(entries.begin(), entries.end());
        for (const auto& entry : entries) {
          const fs::path& path = entry.path();
          if (path.filename().string().rfind('.', 0) == 0) continue;
          std::error_code kind;
          const bool link = entry.is_symlink(kind);
          if (entry.is_directory(kind)) {  // through a link too, as `find -L` does
            if (link) {
              links.push_back(path);
            } else {
              read_folder(path, real / path.filename());
            }
          } else if (entry.is_regular_file(kind)) {
            if (has_extension(path, extensions)) files.push_back(path);
          } else if (link) {  // to nothing, into a loop of links, to a pipe or a device
            std::error_code target;
            spdlog::warn("skipping the link '{}' (to '{}'): {}", path.string(),
                         fs::read_symlink(path, target).string(),
                         kind ? kind.message() : "neither a file nor a folder");
          }
        }
      };
  const auto resolved = [](const fs::path& folder) {
    std::error_code error;
    auto real = fs::canonical(folder, error);
    if (error) spdlog::warn("skipping the folder '{}': {}", folder.string(), error.message());
    return error ? fs::path() : real;
  };
  if (const auto real = resolved(root); !real.empty()) read_folder(root, real);
  while (!links.empty()) {
    const auto link = links.front();
    links.pop_front();
    if (const auto real = resolved(link); !real.empty()) read_folder(link, real);
  }
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace data2vec::io
