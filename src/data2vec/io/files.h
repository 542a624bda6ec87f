// File helpers that never leave a half-written file behind.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

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

// The files a user's folder holds, for every reader of one (text, audio, images): `root`
// itself when it is a file; otherwise the regular files under it, sorted by path, found
// recursively through sub-folders and through links to folders, as `find -L` does: each real
// folder is read once (a link loop ends), under its real path when one leads to it without a
// link. Names starting with '.' (editor swap files, macOS "._" forks, .git) are skipped, files
// and folders alike. Non-empty `extensions` (lower case, with the dot) keep only names ending in
// one of them, in any case. A sub-folder that cannot be read and a link to nothing (or into a
// loop) are skipped with a warning naming them. Throws naming `root` when it does not exist.
std::vector<std::filesystem::path> list_files(const std::string& root,
                                              const std::vector<std::string>& extensions = {});

// fsync a file or directory by path (directories: after a rename inside them).
void fsync_path(const std::string& path);

}  // namespace data2vec::io
