#!/usr/bin/env bash
# Spoken digits "zero".."nine" for the audio evaluation (issue 5), made with Debian's speech
# synthesisers and the real Asterisk recordings:
#   train/<word>/        espeak-ng: 7 English accents x 8 voice variants x 2 speeds x 2 pitches,
#                        flite kal/kal16/awb/rms and festival kal, each at 3 tempos x 3 pitches (sox)
#   test-voices/<word>/  espeak-ng voice variants never used for training (m7, f5), same accents,
#                        speeds and pitches
#   test-engines/<word>/ other synthesisers' voices: flite slt, festival ked (diphone) and
#                        festival slt (HTS), each at 3 tempos x 3 pitches
#   test-real/<word>/    the recorded Asterisk English digits (one speaker, 10 clips)
# Every file is 16 kHz mono 16-bit WAV; the label is the directory name.
# Installs espeak-ng, flite, festival (+ voices) and sox when missing (needs root), and needs
# the speech package data (scripts/fetch-data.sh speech) for test-real. Idempotent (.done marker).
# Run through scripts/fetch-data.sh spoken-digits (it sets DATA_ROOT).
set -euo pipefail
: "${DATA_ROOT:?DATA_ROOT is not set: run scripts/fetch-data.sh spoken-digits}"

out="$DATA_ROOT/speech/spoken-digits"
# The set's fingerprint: sha256 over every file's path and sha256, in sorted order.
set_hash() { (cd "$out" && find . -name '*.wav' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1); }

# v2: sox runs with -R (no random dither), so the set is the same bytes on every machine.
if [ -f "$out/.done" ] && grep -q '^v2 ' "$out/.done"; then
  echo "spoken-digits: already in $out ($(find "$out" -name '*.wav' | wc -l) files, sha256 $(set_hash))"
  exit 0
fi

tools=(espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts sox)
missing=$(for p in "${tools[@]}"; do dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed' || echo "$p"; done)
if [ -n "$missing" ]; then
  echo "spoken-digits: installing" $missing
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing >/dev/null
fi

asterisk="$DATA_ROOT/speech/asterisk-core-sounds-en-wav/usr/share/asterisk/sounds/en_US_f_Allison/digits"
if [ ! -f "$asterisk/0.wav" ]; then
  echo "spoken-digits: no Asterisk digits in $asterisk: run scripts/fetch-data.sh speech first" >&2
  exit 1
fi

words=(zero one two three four five six seven eight nine)
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
rm -rf "$out"

# to16k IN OUT [sox effects...]: 16 kHz mono 16-bit, leading/trailing silence kept as made.
to16k() {
  local in="$1" dst="$2"
  shift 2
  sox -R -V1 "$in" -r 16000 -c 1 -b 16 "$dst" "$@"
}

# variations SPLIT WORD VOICE MADE.wav: 3 tempos x 3 pitches (cents) of one synthesised clip.
variations() {
  local split="$1" word="$2" voice="$3" made="$4"
  for tempo in 0.88 1.0 1.12; do
    for cents in -150 0 150; do
      to16k "$made" "$out/$split/$word/$voice-t$tempo-p$cents.wav" tempo -s "$tempo" pitch "$cents"
    done
  done
}

accents=(en-us en-gb en-gb-scotland en-gb-x-rp en-029 en-gb-x-gbclan en-gb-x-gbcwmd)
variants=(m1 m3 m5 f1 f3 klatt croak edward)
held_out_variants=(m7 f5)
for i in "${!words[@]}"; do
  word="${words[$i]}"
  echo "spoken-digits: $word"
  mkdir -p "$out/train/$word" "$out/test-voices/$word" "$out/test-engines/$word" "$out/test-real/$word"
  for accent in "${accents[@]}"; do
    for variant in "${variants[@]}" "${held_out_variants[@]}"; do
      split=train
      [[ " ${held_out_variants[*]} " == *" $variant "* ]] && split=test-voices
      for speed in 140 190; do
        for pitch in 35 65; do
          espeak-ng -v "$accent+$variant" -s "$speed" -p "$pitch" -w "$tmp/e.wav" "$word"
          to16k "$tmp/e.wav" "$out/$split/$word/espeak-$accent-$variant-s$speed-p$pitch.wav"
        done
      done
    done
  done
  for voice in kal kal16 awb rms; do
    flite -voice "$voice" -t "$word" -o "$tmp/f.wav"
    variations train "$word" "flite-$voice" "$tmp/f.wav"
  done
  echo "$word" | text2wave -eval "(voice_kal_diphone)" -o "$tmp/k.wav"
  variations train "$word" festival-kal "$tmp/k.wav"

  flite -voice slt -t "$word" -o "$tmp/s.wav"
  variations test-engines "$word" flite-slt "$tmp/s.wav"
  echo "$word" | text2wave -eval "(voice_ked_diphone)" -o "$tmp/d.wav"
  variations test-engines "$word" festival-ked "$tmp/d.wav"
  echo "$word" | text2wave -eval "(voice_cmu_us_slt_arctic_hts)" -o "$tmp/h.wav"
  variations test-engines "$word" festival-slt-hts "$tmp/h.wav"

  to16k "$asterisk/$i.wav" "$out/test-real/$word/asterisk-en-allison.wav"
done
hash="$(set_hash)"
echo "v2 $hash" > "$out/.done"
for split in train test-voices test-engines test-real; do
  echo "spoken-digits: $out/$split: $(find "$out/$split" -name '*.wav' | wc -l) clips"
done
echo "spoken-digits: sha256 of the set $hash"
