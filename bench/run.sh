#!/usr/bin/env bash
# The benchmark table: data2vec.cpp (build/data2vec_bench) against the same step in plain PyTorch
# (bench/reference.py under /usr/bin/python3), A/B interleaved in one session, medians of all
# timed steps. Builds nothing: build first (cmake --build build --target data2vec_bench).
#
#   bench/run.sh            default set, about 25 minutes on 2 cores
#   bench/run.sh --quick    smoke set, about 2 minutes
#   bench/run.sh --bf16     add bf16 rows (small batches: bf16 is slow on CPUs without
#                           AVX512-BF16 / AMX)
#   bench/run.sh --base     add vision-small/base, text-base and audio-base rows
#   bench/run.sh --layers   add the A/B of the attention kernels: the transformer blocks alone
#                           (forward + backward) built plain / fused / blocked, C++ only
#   bench/run.sh --scaling  add the scaling table: train steps at a fixed 4096 text tokens
#                           (T = 128 .. 1024) and 20 s of audio (2 .. 20 s clips) per batch
#   bench/run.sh --hf       add extraction with imported Hugging Face base models (ViT-B/16 at
#                           224 and audio base on 10 s, random weights written by
#                           scripts/hf_reference.py make-model) against the same model in plain
#                           PyTorch (hf_reference.py bench: a transcription of HF's classes)
#   bench/run.sh --isa avx2 hold oneDNN (DNNL_MAX_CPU_ISA) and ATen (ATEN_CPU_CAPABILITY) to
#                           their AVX2 kernels on both sides: the instruction set of an AVX2-only
#                           CPU (Zen 3, Haswell .. Alder Lake) on an AVX512 one; caches, clocks
#                           and memory stay this machine's. Our own kernels run their AVX2
#                           clones on every AVX2 CPU anyway; OpenBLAS 0.3.21 its Haswell ones.
#   options: --rounds N (default 2; quick 1), --threads N (default: all cores),
#            --out FILE (JSON lines; default bench/results/<date>.jsonl),
#            --no-same-blas (skip the C++ runs on LibTorch's BLAS, below)
# Where the build has oneDNN (nn/gemm.h), every C++ row runs twice: as built (the blocks' linears
# on oneDNN's sgemm) and with --gemm torch, on the BLAS the Python side uses (the same-kernels
# ratio); the GEMM peak is measured for both libraries.
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH=${BENCH:-build/data2vec_bench}
PYTHON=${PYTHON:-/usr/bin/python3}
args_given="$*"
quick=0 bf16=0 base=0 layers=0 scaling=0 hf=0 same_blas=1 rounds="" threads=$(nproc) out="" isa=native
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) quick=1 ;;
    --bf16) bf16=1 ;;
    --base) base=1 ;;
    --layers) layers=1 ;;
    --scaling) scaling=1 ;;
    --hf) hf=1 ;;
    --no-same-blas) same_blas=0 ;;
    --rounds) rounds=$2; shift ;;
    --threads) threads=$2; shift ;;
    --out) out=$2; shift ;;
    --isa) isa=$2; shift ;;
    -h|--help) sed -n '2,29p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
case "$isa" in
  native) ;;
  avx2) export DNNL_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 ;;
  *) echo "run.sh: --isa takes native or avx2, not $isa" >&2; exit 2 ;;
esac
if [[ ! -x $BENCH ]]; then
  echo "run.sh: $BENCH not found: build it first:" >&2
  echo "  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release && cmake --build build --target data2vec_bench" >&2
  exit 1
fi
[[ -z $rounds ]] && rounds=$((quick ? 1 : 2))
onednn=0
"$BENCH" --mode gemm --gemm onednn --gemm-size 64 --warmup 0 --reps 1 > /dev/null 2>&1 && onednn=1
((onednn)) || same_blas=0
mkdir -p bench/results
[[ -z $out ]] && out=bench/results/$(date -u +%Y%m%dT%H%M%SZ).jsonl
: > "$out"

# config mode batch dtype warmup reps  (reps per process; every round adds that many)
# A config ending in .yaml is a training config's model (--yaml): the data2vec 2.0 demo step
# (fmnist-tiny-v2: 32 images x 8 masked copies) and ViT-tiny at 224 px under the paper's
# ImageNet recipe (bench/vision-tiny-v2.yaml: 8 images x 16 copies; warm-up 2: with 1, the
# Python side's first timed step ran 2x slow), reference.py's twin of
# data2vec_bench --yaml.
rows=()
if ((quick)); then
  rows+=("vision-tiny train 16 fp32 1 2" "vision-tiny extract 16 fp32 1 3"
         "text-tiny train 16 fp32 1 2" "configs/vision/fmnist-tiny-v2.yaml train 32 fp32 1 2")
else
  # Warm-up 3 (2 at batch 128, 4 for its training): Python's first steps run up to 3x slower
  # than its steady state (glibc's dynamic mmap threshold is still climbing), and steady state
  # is what a run sees. At batch 128 both sides' heaps still grow through the first steps (C++:
  # 1.6M page faults in the first two, tens of thousands a step up to about the 7th, none
  # after, `perf stat -I`; Python's steps 3-5 read 36, 29, 25 s); warming training up past all
  # of it would add 5-8 minutes. Batch-128 training times 3 steps: its single timed step read
  # 5.97-7.82 s where 4 timed ones read 5.45-5.88 s (2026-12-02, C++).
  rows+=("vision-tiny train 16 fp32 3 2" "vision-tiny train 128 fp32 4 3"
         "vision-tiny extract 16 fp32 3 3" "vision-tiny extract 128 fp32 2 2"
         "audio-tiny extract 16 fp32 3 3" "audio-tiny extract 128 fp32 2 2"
         "text-tiny train 16 fp32 3 2" "audio-tiny train 8 fp32 3 2"
         "configs/vision/fmnist-tiny-v2.yaml train 32 fp32 3 2"
         "bench/vision-tiny-v2.yaml train 8 fp32 2 4")
fi
((bf16)) && rows+=("vision-tiny train 4 bf16 1 1" "vision-tiny extract 4 bf16 1 1")
hf_rows=()
if ((hf)); then
  hf_dir=bench/results/hf-models
  for model in vision-base audio-base; do
    [[ -f $hf_dir/$model/model.safetensors ]] ||
      "$PYTHON" scripts/hf_reference.py make-model "$model" "$hf_dir/$model" >&2
  done
  hf_rows+=("vision-base extract 8 fp32 1 2" "audio-base extract 2 fp32 1 2")
fi
if ((scaling)); then
  rows+=("text-tiny train 32 fp32 2 2 128" "text-tiny train 16 fp32 2 2 256"
         "text-tiny train 8 fp32 2 2 512" "text-tiny train 4 fp32 2 2 1024"
         "audio-tiny train 10 fp32 2 1 2" "audio-tiny train 4 fp32 2 1 5"
         "audio-tiny train 2 fp32 2 1 10" "audio-tiny train 1 fp32 2 1 20")
fi
layer_rows=()
((layers)) && layer_rows+=("vision-tiny 16" "text-tiny 16 128" "text-tiny 4 1024")
((base)) && rows+=("vision-small train 16 fp32 1 1" "vision-base train 8 fp32 1 1"
                   "text-base train 8 fp32 1 1" "audio-base train 4 fp32 1 1")

echo "# data2vec.cpp vs PyTorch (Python) — $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "command: bench/run.sh $args_given"
echo "machine: $(lscpu | sed -n 's/^Model name: *//p' | head -1) ($(grep -o -m1 -w 'avx512_bf16\|amx_bf16\|avx2' /proc/cpuinfo | sort -u | tr '\n' ' ')), $(nproc) cores; $(uptime | sed 's/.*load/load/')"
echo "instruction set: $([[ $isa == avx2 ]] && echo "held to AVX2 (DNNL_MAX_CPU_ISA=AVX2, ATEN_CPU_CAPABILITY=avx2)" || echo "as the libraries pick")"
echo "threads: $threads; rounds: $rounds (C++ and Python alternate, order swapped each round)"
echo "C++ GEMM library: $( ((onednn)) && echo "oneDNN sgemm$( ((same_blas)) && echo ", and LibTorch's BLAS (--gemm torch)")" || echo "LibTorch's BLAS")"
echo "results: $out"

gemm() {  # the matmul peak of each dtype, measured in the same session: median of 15 products
  # (one takes ~50 ms; medians of 3 ranged 170-318 GFLOP/s in one session on 2 shared cores)
  "$BENCH" --mode gemm --dtype "$1" --threads "$threads" --warmup 3 --reps 15 --gemm torch >> "$out"
  if ((onednn)) && [[ $1 == fp32 ]]; then
    "$BENCH" --mode gemm --dtype "$1" --threads "$threads" --warmup 3 --reps 15 --gemm onednn >> "$out"
  fi
}
for ((round = 1; round <= rounds; round++)); do
  gemm fp32
  ((bf16)) && gemm bf16
  for row in "${rows[@]}"; do
    read -r config mode batch dtype warmup reps length <<< "$row"
    flag=--config
    [[ $config == *.yaml ]] && flag=--yaml
    args=("$flag" "$config" --mode "$mode" --batch "$batch" --dtype "$dtype"
          --threads "$threads" --warmup "$warmup" --reps "$reps" --seed "$round")
    # the scaling rows' sequence length: tokens (text) or seconds (audio)
    if [[ -n ${length:-} ]]; then
      if [[ $config == text* ]]; then args+=(--tokens "$length"); else args+=(--seconds "$length"); fi
    fi
    cpp() {
      "$BENCH" "${args[@]}" >> "$out"
      if ((same_blas)); then "$BENCH" "${args[@]}" --gemm torch >> "$out"; fi
    }
    py() { "$PYTHON" bench/reference.py "${args[@]}" >> "$out"; }
    if ((round % 2)); then cpp; py; else py; cpp; fi
    echo "  round $round: $config $mode b$batch $dtype ${length:-} done ($(uptime | sed 's/.*load average: //'))" >&2
  done
  for row in "${layer_rows[@]}"; do
    read -r config batch tokens <<< "$row"
    args=(--config "$config" --mode layers --batch "$batch" --threads "$threads" --warmup 1
          --reps 2)
    [[ -n ${tokens:-} ]] && args+=(--tokens "$tokens")
    kernels=(plain fused blocked)
    ((round % 2)) || kernels=(blocked fused plain)
    for kernel in "${kernels[@]}"; do "$BENCH" "${args[@]}" --kernel "$kernel" >> "$out"; done
    echo "  round $round: layers $config b$batch ${tokens:-} done ($(uptime | sed 's/.*load average: //'))" >&2
  done
  for row in "${hf_rows[@]}"; do
    read -r model mode batch dtype warmup reps <<< "$row"
    args=(--config "hf-$model" --mode "$mode" --batch "$batch" --threads "$threads"
          --warmup "$warmup" --reps "$reps" --seed "$round")
    cpp() { "$BENCH" --hf "$hf_dir/$model" "${args[@]}" | tee -a "$out" |
              sed 's/.*"flops_per_example":\([0-9.e+]*\).*/\1/' > "$hf_dir/$model.flops"; }
    py() { "$PYTHON" scripts/hf_reference.py bench "$hf_dir/$model" --config "hf-$model" \
             --batch "$batch" --threads "$threads" --warmup "$warmup" --reps "$reps" \
             --seed "$round" --flops "$(cat "$hf_dir/$model.flops")" | grep '^{' >> "$out"; }
    if ((round % 2)); then cpp; py; else py; cpp; fi
    echo "  round $round: hf-$model $mode b$batch done ($(uptime | sed 's/.*load average: //'))" >&2
  done
done
echo "load after: $(uptime | sed 's/.*load/load/')"
echo "BLAS: $(grep -m1 -o '"blas": *"[^"]*"' "$out" | sed 's/.*: *//')"
echo "torch: $(grep -m1 -o '"torch": *"[^"]*"' "$out" | sed 's/.*: *//') (C++ and Python)"
echo
"$PYTHON" bench/table.py "$out"
