#!/usr/bin/env bash
# Fetch the Debian bookworm packages that a bare CUDA + PyTorch image lacks for building data2vec
# (scripts/gpu-smoke.sh unpacks them with DEPS_DIR=DIR; nothing is installed). Run on a Debian
# bookworm machine with network access: scripts/gpu-deps.sh DIR
# Not libgloo-dev: its headers must match the gloo inside LibTorch. Not libdnnl-dev: a
# PyTorch-shipped LibTorch carries its own oneDNN (and MKL for the BLAS).
set -euo pipefail
dir="${1:?usage: scripts/gpu-deps.sh DIR}"
mkdir -p "$dir"
packages=(
  libyaml-cpp-dev libyaml-cpp0.7 libcli11-dev libspdlog-dev libspdlog1.10 libfmt-dev libfmt9
  nlohmann-json3-dev zlib1g-dev zlib1g libgtest-dev pkgconf pkgconf-bin libpkgconf3
  # audio: libsndfile's pkg-config file requires the codecs' own .pc files
  libsndfile1-dev libsndfile1 libflac-dev libflac12 libvorbis-dev libvorbis0a libvorbisenc2
  libogg-dev libogg0 libopus-dev libopus0 libmpg123-dev libmpg123-0 libmp3lame0
  libsamplerate0-dev libsamplerate0
  # images, text pre-tokenisation, the sentencepiece plugin
  libstb-dev libstb0 libturbojpeg0-dev libturbojpeg0 libpng-dev libpng16-16
  libpcre2-dev libpcre2-8-0 libpcre2-16-0 libpcre2-32-0 libpcre2-posix3
  libsentencepiece-dev libsentencepiece0 libprotobuf-lite32
  # the BLAS that nn/attention.cpp calls directly
  libopenblas-dev libopenblas-pthread-dev libopenblas0-pthread libopenblas0 libgfortran5 libquadmath0
)
cd "$dir" && apt-get download "${packages[@]}"
ls "$dir"/*.deb | wc -l
