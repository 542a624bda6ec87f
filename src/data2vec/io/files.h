// File helpers that never leave a half-written file behind.
#pragma once

#include <string>

namespace data2vec::io {

// Writes `bytes` to `path` through `path.tmp`, fsync and rename, then fsyncs the directory.
// A symbolic link is followed (the file it points to is replaced, the link stays); a pipe or a
// device is written directly; a directory is an error naming the path.
void write_file_atomically(const std::string& path, const std::string& bytes);

// Throws, naming `flag` and `path`, when a file cannot be written at `path` because its folder
// does not exist or `path` is a folder: checked before a long job, not after it.
void check_output_path(const std::string& path, const std::string& flag);

// Whole file as bytes; throws naming the file when it cannot be read.
std::string read_file(const std::string& path);

// fsync a file or directory by path (directories: after a rename inside them).
void fsync_path(const std::string& path);

}  // namespace data2vec::io
