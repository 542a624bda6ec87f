#!/usr/bin/env bash
# GPU readiness check, for a CUDA machine that has PyTorch (its LibTorch is what we build against):
#   1. build data2vec against `python3 -c 'import torch'`'s LibTorch, with NCCL when nccl.h is there
#   2. CPU-vs-CUDA parity of every modality (tests/test_device_cuda.cpp) and the core tests
#   3. a few pretraining steps on cuda, fp32 and bf16 (Fashion-MNIST, the demo's model)
#   4. one-process NCCL data parallelism through the launcher environment
#   5. a linear probe on cuda
# Usage: scripts/gpu-smoke.sh [LOG_DIR]. Set DEPS_DIR to a folder of Debian .deb files to unpack
# build dependencies the machine lacks (yaml-cpp, spdlog, ...) without installing them.
# Every step runs even when an earlier one failed; the summary at the end says which passed.
# The .debs a bare CUDA image lacks (fetch them on a Debian bookworm machine with apt-get download):
#   libyaml-cpp-dev libyaml-cpp0.7 libcli11-dev libspdlog-dev libspdlog1.10 libfmt-dev libfmt9
#   nlohmann-json3-dev libsndfile1-dev libsndfile1 libflac12 libvorbis0a libvorbisenc2 libogg0
#   libopus0 libmpg123-0 libmp3lame0 libsamplerate0-dev libsamplerate0 libstb-dev libstb0
#   zlib1g-dev libsentencepiece-dev libsentencepiece0 libprotobuf-lite32 libgtest-dev
#   pkgconf pkgconf-bin libpkgconf3     (not libgloo-dev: its headers must match LibTorch's gloo)
set -uo pipefail
cd "$(dirname "$0")/.."
log_dir="${1:-runs/gpu-smoke}"
rm -rf "$log_dir"/vision-* "$log_dir"/toy-nccl  # pretrain refuses to start over a run
mkdir -p "$log_dir"
build=build-cuda
declare -a results=()
step() {  # step NAME COMMAND...: run, time, record
  local name="$1"; shift
  local start=$SECONDS
  echo "=== $name"
  if "$@"; then results+=("PASS  $name ($((SECONDS - start)) s)");
  else results+=("FAIL  $name ($((SECONDS - start)) s)"); fi
}

echo "machine: $(nproc) cores; $(nvidia-smi -L 2>/dev/null | head -1)"
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'

prefix_path="$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')"
if [ -n "${DEPS_DIR:-}" ]; then
  mkdir -p /tmp/deps
  for f in "$DEPS_DIR"/*.deb; do dpkg -x "$f" /tmp/deps; done
  prefix_path="$prefix_path;/tmp/deps/usr"
  export PATH="/tmp/deps/usr/bin:$PATH"
  export LD_LIBRARY_PATH="/tmp/deps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
  export PKG_CONFIG_PATH="/tmp/deps/usr/lib/x86_64-linux-gnu/pkgconfig:/tmp/deps/usr/share/pkgconfig"
  export PKG_CONFIG_SYSROOT_DIR=/tmp/deps
  command -v pkg-config >/dev/null || ln -sf /tmp/deps/usr/bin/pkgconf /tmp/deps/usr/bin/pkg-config
fi
nccl_include="$(dirname "$(find / -name nccl.h -path '*nccl*' 2>/dev/null | head -1)")"
echo "nccl.h: ${nccl_include:-not found}"
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"

configure() {
  cmake -S . -B $build -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix_path" \
    -DDATA2VEC_BUILD_BENCH=OFF ${nccl_include:+-DDATA2VEC_NCCL_INCLUDE="$nccl_include"} 2>&1 |
    tee "$log_dir/configure.log" | grep -E "data2vec:|Error|error|Torch|CUDA" | head -20
  test -f $build/Makefile
}
compile() {
  cmake --build $build -j "$(nproc)" --target data2vec test_device_cuda test_core_parity \
    test_core_data2vec test_core_targets -- -k 2>&1 | tee "$log_dir/build.log" |
    grep -E "error|Error" | head -60
  test -x $build/data2vec
}
step configure configure
step build compile

step "cuda parity tests" $build/tests/test_device_cuda
step "core tests (torch $(python3 -c 'import torch; print(torch.__version__)'))" \
  bash -c "$build/tests/test_core_parity && $build/tests/test_core_data2vec && $build/tests/test_core_targets"

pretrain() {  # pretrain PRECISION STEPS
  $build/data2vec pretrain --config configs/vision/fmnist-tiny.yaml --out "$log_dir/vision-$1" \
    --set train.device=cuda --set train.precision="$1" --set train.max_steps="$2" \
    --set train.num_workers=4 --set eval.knn_every=0 --set log.every=10 --set checkpoint.every=1000
}
step "pretrain vision on cuda, fp32, 60 steps" pretrain fp32 60
step "pretrain vision on cuda, bf16, 60 steps" pretrain bf16 60
step "nccl data parallel (1 process)" env WORLD_SIZE=1 RANK=0 LOCAL_RANK=0 MASTER_ADDR=127.0.0.1 \
  MASTER_PORT=29561 $build/data2vec pretrain --config configs/toy/tiny.yaml --out "$log_dir/toy-nccl" \
  --set train.device=cuda --set train.max_steps=20 --set log.every=5
step "linear probe on cuda" $build/data2vec probe --checkpoint "$log_dir/vision-fp32" \
  --set train.device=cuda --train-limit 5000 --test-limit 2000

for f in "$log_dir"/vision-*/metrics.jsonl; do echo "$f: $(tail -1 "$f")"; done
echo
echo "summary:"
printf '%s\n' "${results[@]}"
! printf '%s\n' "${results[@]}" | grep -q '^FAIL'
