#include <CLI/CLI.hpp>

int main(int argc, char** argv) {
  CLI::App app{"data2vec: self-supervised pretraining for images, speech and text"};
  app.require_subcommand(1);
  app.add_subcommand("version", "print the version");
  CLI11_PARSE(app, argc, argv);
  return 0;
}
