// `data2vec embed`: features of the files under a path, from a checkpoint's student encoder.
#pragma once

#include <string>

namespace data2vec::app {

struct EmbedOptions {
  std::string checkpoint;  // run or checkpoint directory
  std::string input;       // a file, or a directory searched recursively
  std::string output;      // .safetensors: "features" [N,D] fp32; metadata "files" (JSON list)
  std::string pool = "mean";  // mean | cls | grid
};

// Returns the number of files embedded; unreadable files are skipped, named and counted.
int64_t embed_files(const EmbedOptions& options);

}  // namespace data2vec::app
