#!/usr/bin/env bash
# GPU readiness check, for a CUDA machine that has PyTorch (its LibTorch is what we build against):
#   1. build data2vec against `python3 -c 'import torch'`'s LibTorch, with NCCL when nccl.h is there
#   2. CPU-vs-CUDA parity of every modality (tests/test_device_cuda.cpp) and the core tests
#   3. a few pretraining steps on cuda, fp32 and bf16 (Fashion-MNIST, the demo's model)
#   4. one-process NCCL data parallelism through the launcher environment
#   5. a linear probe on cuda
#   6. where python3 has transformers: Hugging Face exchange checked by the real
#      package (scripts/hf_transformers_check.py): each tests/fixtures/hf model loads and reproduces
#      its expected outputs, imported then exported by us it still does, and the cuda-pretrained run
#      exported by us gives in transformers what `data2vec hf-forward` gives
# Usage: scripts/gpu-smoke.sh [LOG_DIR]. Set DEPS_DIR to a folder of Debian .deb files to unpack
# build dependencies the machine lacks (yaml-cpp, spdlog, ...) without installing them:
# scripts/gpu-deps.sh DIR fetches them on a Debian bookworm machine. Set FMNIST_DIR to a folder of
# the four Fashion-MNIST .gz files where data/fashion-mnist is not there (the machine is offline).
# CMAKE_ARGS goes to the configure step (e.g. -DCMAKE_CXX_FLAGS_RELEASE=-O1 to build faster).
# Every step runs even when an earlier one failed; the summary at the end says which passed.
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
  deps=/tmp/deps
  mkdir -p $deps
  for f in "$DEPS_DIR"/*.deb; do dpkg -x "$f" $deps; done
  libs=$deps/usr/lib/x86_64-linux-gnu
  # Debian points libblas.so / libopenblas.so at OpenBLAS through alternatives, which dpkg -x skips.
  ln -sf openblas-pthread/libopenblas.so $libs/libopenblas.so
  prefix_path="$prefix_path;$deps/usr"
  export PATH="$deps/usr/bin:$PATH"
  export LD_LIBRARY_PATH="$libs:$libs/openblas-pthread:${LD_LIBRARY_PATH:-}"
  # Only the unpacked .pc files: the sysroot prefix would send the machine's own ones astray.
  export PKG_CONFIG_LIBDIR="$libs/pkgconfig:$deps/usr/share/pkgconfig"
  export PKG_CONFIG_SYSROOT_DIR=$deps
  command -v pkg-config >/dev/null || ln -sf $deps/usr/bin/pkgconf $deps/usr/bin/pkg-config
fi
if [ -n "${FMNIST_DIR:-}" ] && [ ! -s data/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  rm -rf data/fashion-mnist && mkdir -p data && cp -r "$FMNIST_DIR" data/fashion-mnist
fi
nccl_include="$(dirname "$(find / -name nccl.h -path '*nccl*' 2>/dev/null | head -1)")"
echo "nccl.h: ${nccl_include:-not found}"
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"

configure() {
  cmake -S . -B $build -G "Unix Makefiles" -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix_path" \
    -DDATA2VEC_BUILD_BENCH=OFF ${nccl_include:+-DDATA2VEC_NCCL_INCLUDE="$nccl_include"} ${CMAKE_ARGS:-} 2>&1 |
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

hf_exchange() {  # every fixture through transformers, ours exported through transformers
  local check="python3 scripts/hf_transformers_check.py" dir="$log_dir/hf" ok=0
  rm -rf "$dir" && mkdir -p "$dir"
  for fixture in tests/fixtures/hf/*/; do
    local name
    name="$(basename "$fixture")"
    $check compare "$fixture" --inputs "$fixture/inputs.safetensors" \
      --expected "$fixture/outputs.safetensors" || ok=1
    $build/data2vec import-hf "$fixture" --out "$dir/$name-run" >/dev/null &&
      $build/data2vec export-hf "$dir/$name-run" --out "$dir/$name-export" >/dev/null &&
      $check compare "$dir/$name-export" --inputs "$fixture/inputs.safetensors" \
        --expected "$fixture/outputs.safetensors" || ok=1
  done
  $build/data2vec export-hf "$log_dir/vision-fp32" --out "$dir/vision-fp32-export" >/dev/null &&
    $check make-inputs "$dir/vision-fp32-export" --output "$dir/vision-inputs.safetensors" &&
    $build/data2vec hf-forward "$dir/vision-fp32-export" --inputs "$dir/vision-inputs.safetensors" \
      --output "$dir/vision-ours.safetensors" &&
    $check compare "$dir/vision-fp32-export" --inputs "$dir/vision-inputs.safetensors" \
      --expected "$dir/vision-ours.safetensors" || ok=1
  return $ok
}
if python3 -c 'import transformers' 2>/dev/null; then
  step "Hugging Face exchange, transformers $(python3 -c 'import transformers; print(transformers.__version__)')" \
    hf_exchange
fi

for f in "$log_dir"/vision-*/metrics.jsonl; do echo "$f: $(tail -1 "$f")"; done
echo
echo "summary:"
printf '%s\n' "${results[@]}"
! printf '%s\n' "${results[@]}" | grep -q '^FAIL'
