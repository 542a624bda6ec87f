// What every fuzz target shares: a private scratch directory for the files a reader opens by
// path, and the check that a refusal names the file it refuses.
//
// A target feeds the bytes libFuzzer gives it to one reader of untrusted files. An exception is
// the expected answer to bad bytes, but its message must name the file (the README's promise);
// a crash, a sanitizer report, a timeout, an allocation beyond libFuzzer's limit or an error
// that names no file is a finding.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <string>

namespace data2vec::fuzz {

// This process's own directory under $TMPDIR (or /tmp), removed at exit. The name is never
// destroyed: the exit handler that removes the directory runs after static destructors would.
inline const std::string& scratch_dir() {
  static const std::string& dir = *new std::string([] {
    const char* base = std::getenv("TMPDIR");
    std::string pattern = std::string(base && *base ? base : "/tmp") + "/d2v-fuzz-XXXXXX";
    if (mkdtemp(pattern.data()) == nullptr) {
      std::perror("d2v fuzz: mkdtemp");
      std::abort();
    }
    std::atexit([] { std::error_code ec; std::filesystem::remove_all(scratch_dir(), ec); });
    return pattern;
  }());
  return dir;
}

inline void write_bytes(const std::string& path, const void* data, size_t size) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(static_cast<const char*>(data), std::streamsize(size));
  if (!out) {
    std::fprintf(stderr, "d2v fuzz: cannot write %s\n", path.c_str());
    std::abort();
  }
}

// Writes the input as scratch_dir()/name and returns the path.
inline std::string write_input(const std::string& name, const uint8_t* data, size_t size) {
  const auto path = scratch_dir() + "/" + name;
  write_bytes(path, data, size);
  return path;
}

// Runs `read`; an exception must name `file` in its message.
template <typename Read>
void expect_named_refusal(Read&& read, const std::string& file) {
  try {
    read();
  } catch (const std::exception& e) {
    if (std::string(e.what()).find(file) == std::string::npos) {
      std::fprintf(stderr, "d2v fuzz: an error does not name the file %s:\n%s\n", file.c_str(),
                   e.what());
      std::abort();
    }
  }
}

}  // namespace data2vec::fuzz
