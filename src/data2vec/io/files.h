// File helpers that never leave a half-written file behind.
#pragma once

#include <string>

namespace data2vec::io {

// Writes `bytes` to `path` through `path.tmp`, fsync and rename, then fsyncs the directory.
void write_file_atomically(const std::string& path, const std::string& bytes);

// Whole file as bytes; throws naming the file when it cannot be read.
std::string read_file(const std::string& path);

// fsync a file or directory by path (directories: after a rename inside them).
void fsync_path(const std::string& path);

}  // namespace data2vec::io
