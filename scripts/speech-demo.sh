#!/usr/bin/env bash
# The speech job: fetch the Asterisk prompts and klettres (Debian packages, unpacked only),
# synthesise the spoken digits (espeak-ng, flite, festival + sox), pretrain
# configs/audio/speech-tiny-v2.yaml (data2vec 2.0; speech-tiny.yaml is 1.0), and evaluate spoken
# digits and language ID: mean log-mel, random init, data2vec student / teacher.
#   SPEECH_CONFIG  the preset           (default configs/audio/speech-tiny-v2.yaml)
#   SPEECH_OUT     the run directory    (default runs/speech; replaced)
#   SPEECH_SET     extra --set overrides, space-separated
set -euo pipefail
cd "$(dirname "$0")/.."
config="${SPEECH_CONFIG:-configs/audio/speech-tiny-v2.yaml}"
out="${SPEECH_OUT:-runs/speech}"
bin=build/data2vec
sets=()
for kv in ${SPEECH_SET:-}; do sets+=(--set "$kv"); done
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"

scripts/fetch-data.sh speech
scripts/fetch-data.sh spoken-digits
rm -rf "$out"
echo "== pretraining ($config) -> $out"
"$bin" pretrain --config "$config" --out "$out" "${sets[@]}"
"$bin" plot "$out"
echo "== evaluating: mean log-mel, random init, data2vec (spoken digits, language)"
"$bin" evaluate --checkpoint "$out" --report "$out/report.md"
echo
cat "$out/report.md"
