#!/usr/bin/env bash
# Speech recognition from a data2vec encoder: synthesise the spoken sentences (Brown corpus read
# by espeak-ng / flite / festival, scripts/fetch/spoken-sentences.sh), pretrain the speech-tiny
# encoder with data2vec on the training clips' audio alone (no transcripts), then CTC fine-tune
# it and the same encoder at random init on the transcripts, and print WER / CER on held-out
# voices, held-out synthesisers, the recorded Asterisk numbers and klettres' spoken letters;
# finally transcribe two test clips with the saved model.
#   ASR_CONFIG           pretraining preset            (default configs/audio/speech-tiny.yaml)
#   ASR_OUT              output folder, replaced       (default runs/asr)
#   ASR_PRETRAIN_STEPS   data2vec updates              (default 60)
#   ASR_STEPS            CTC fine-tuning updates       (default 150)
#   ASR_LR               CTC peak learning rate        (default 1e-3; 2e-3 barely leaves the blank plateau)
#   ASR_SEED             fine-tuning seed              (default 0)
#   ASR_SET              extra pretraining --set overrides, space-separated (e.g. train.threads=1;
#                        fine-tuning then runs with the pretraining run's threads too)
#   ASR_PRETRAINED       skip pretraining: fine-tune this run (e.g. runs/speech from
#                        scripts/speech-demo.sh, or a run import-hf made)
set -euo pipefail
cd "$(dirname "$0")/.."
config="${ASR_CONFIG:-configs/audio/speech-tiny.yaml}"
out="${ASR_OUT:-runs/asr}"
bin=build/data2vec
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
sets=()
for kv in ${ASR_SET:-}; do sets+=(--set "$kv"); done
start=$(date +%s)

# The speech corpora first: spoken-sentences makes its test-digits (Asterisk) and test-letters
# (klettres) lists from them, and its printed sha256 covers both.
scripts/fetch-data.sh speech
scripts/fetch-data.sh spoken-sentences
set="data/speech/spoken-sentences"
rm -rf "$out"
mkdir -p "$out"
pretrained="${ASR_PRETRAINED:-}"
if [ -z "$pretrained" ]; then
  pretrained="$out/pretrain"
  echo "== data2vec pretraining on the training clips' audio ($config, ${ASR_PRETRAIN_STEPS:-60} steps)"
  "$bin" manifest "$set/train" --out "$out/train-audio.tsv"
  "$bin" pretrain --config "$config" --out "$pretrained" --set data.dataset="$out/train-audio.tsv" \
    --set train.max_steps="${ASR_PRETRAIN_STEPS:-60}" --set checkpoint.every=100000 "${sets[@]}"
fi
pretrain_done=$(date +%s)

tests=(--test "$set/test-voices/test-voices.tsv" --test "$set/test-engines/test-engines.tsv")
for recorded in test-digits test-letters; do  # present when the speech corpora are
  if [ -f "$set/$recorded/$recorded.tsv" ]; then tests+=(--test "$set/$recorded/$recorded.tsv"); fi
done
echo "== CTC fine-tuning: random init, then data2vec (${ASR_STEPS:-150} updates each)"
"$bin" finetune-ctc --checkpoint "$pretrained" --train "$set/train/train.tsv" "${tests[@]}" \
  --steps "${ASR_STEPS:-150}" --lr "${ASR_LR:-1e-3}" --seed "${ASR_SEED:-0}" \
  --out "$out/ctc" --report "$out/report.md" >/dev/null
end=$(date +%s)
echo "== transcribing two held-out clips with $out/ctc"
clips=$(head -n 2 "$set/test-voices/test-voices.tsv" | cut -f1 | sed "s|^|$set/test-voices/|")
"$bin" transcribe "$out/ctc" $clips
head -n 2 "$set/test-voices/test-voices.tsv" | cut -f2 | sed 's/^/reference: /'
{
  echo
  echo "Wall time: pretraining $(((pretrain_done - start) / 60)) min, CTC fine-tuning (both models)" \
    "$(((end - pretrain_done) / 60)) min; $(nproc) cores; one seed (${ASR_SEED:-0})."
} >>"$out/report.md"
echo
cat "$out/report.md"
