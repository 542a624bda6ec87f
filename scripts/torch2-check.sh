#!/usr/bin/env bash
# Build data2vec against LibTorch 2.x and run its test suite, on a Debian bookworm machine, with
# nothing installed: Debian trixie's libtorch 2.6 (CPU, with gloo and oneDNN 3.6) and every
# library it needs at run time, glibc and libstdc++ included, are unpacked into one folder. The
# bookworm compiler builds against those headers; the executables get trixie's dynamic loader and
# an RPATH into the folder, so they run on trixie's libraries while cmake and ctest stay bookworm's.
#
#   scripts/torch2-check.sh [CTEST_ARGS...]      (default: -L unit, as `make test`)
#
# TORCH2_ROOT (default /tmp/data2vec-torch2) holds the packages; the build tree is build-torch2.
# Needs network access to deb.debian.org the first time (~140 MB). A clean build takes as long as
# the main one (~20-30 min on 2 cores). The CUDA side of LibTorch 2.x is scripts/gpu-smoke.sh's.
#
# Left out: InstalledPackage.CustomEncoderExampleBuildsAndPretrains and the Fuzz.* tests build
# separate projects without this script's linker flags, which cannot link against trixie's glibc;
# Distributed.LaunchesUnderTorchrun runs Debian's torchrun (PyTorch 1.13), whose rendezvous store
# a 2.x client cannot talk to. All three run in `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."
root="${TORCH2_ROOT:-/tmp/data2vec-torch2}"
sysroot="$root/sysroot"
build=build-torch2
ctest_args=("$@")
[ ${#ctest_args[@]} -gt 0 ] || ctest_args=(-L unit)

if [ ! -f "$sysroot/.complete" ]; then
  mkdir -p "$root/apt/lists/partial" "$root/apt/cache/archives/partial" "$root/debs" "$sysroot"
  echo "deb http://deb.debian.org/debian trixie main" >"$root/apt/sources.list"
  apt_options=(-o "Dir::Etc::SourceList=$root/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$root/apt/lists" -o "Dir::Cache=$root/apt/cache"
    -o APT::Architecture=amd64)
  apt-get "${apt_options[@]}" update
  # The run-time closure of libtorch2.6, less what no loaded library needs (interpreters, GPU
  # runtimes of other vendors, package tools) and the -dev packages of other libraries.
  mapfile -t packages < <(apt-cache "${apt_options[@]}" depends --recurse --no-recommends \
    --no-suggests --no-conflicts --no-breaks --no-replaces --no-enhances \
    libtorch2.6 libtorch-dev libgloo-dev libdnnl-dev libc6 libstdc++6 | grep '^[a-z0-9]' |
    grep -v -E '^(libllvm|libamd|libhsa|libdrm|python3|perl|libperl|libpython|debconf|cdebconf|adduser|dpkg|tar|libjs-|libc-dev-bin|libc6-dev|linux-libc-dev|libcrypt-dev|rpcsvc|libexpat1-dev|libprotobuf-dev|zlib1g-dev|libslang|libnewt|whiptail|mpi-default|openmpi-bin|openmpi-common|gfortran|cpp|gcc)' |
    sort -u)
  (cd "$root/debs" && apt-get "${apt_options[@]}" download "${packages[@]}")
  for deb in "$root"/debs/*.deb; do dpkg -x "$deb" "$sysroot"; done
  touch "$sysroot/.complete"
fi

lib="$sysroot/usr/lib/x86_64-linux-gnu"
# DT_RPATH (not RUNPATH) so that the libraries' own dependencies resolve there too; the
# bookworm linker cannot check trixie's libraries against bookworm's glibc, hence allow-shlib-undefined.
link_flags="-Wl,--dynamic-linker=$lib/ld-linux-x86-64.so.2 -Wl,--disable-new-dtags"
link_flags+=" -Wl,-rpath,$lib:$lib/openblas-pthread:$sysroot/usr/lib -Wl,--allow-shlib-undefined"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$sysroot/usr" \
  -DCMAKE_EXE_LINKER_FLAGS="$link_flags" -DCMAKE_SHARED_LINKER_FLAGS="$link_flags" \
  -DCMAKE_MODULE_LINKER_FLAGS="$link_flags" -DDATA2VEC_BUILD_BENCH=OFF \
  -DDATA2VEC_DNNL_INCLUDE="$sysroot/usr/include" -DDATA2VEC_DNNL_LIBRARY="$lib/libdnnl.so" |
  grep -E "data2vec:|Found Torch|Error" || true
cmake --build "$build" -j "$(nproc)"
cd "$build"
ctest --output-on-failure -E '^(InstalledPackage\.|Fuzz\.|Distributed\.LaunchesUnderTorchrun)' \
  "${ctest_args[@]}"
