#!/usr/bin/env bash
# Spoken sentences with transcripts, for CTC fine-tuning (speech recognition) without a download
# of speech: sentences of the Brown corpus (scripts/fetch/text.sh) read by Debian's synthesisers.
#   train/          403 sentences, each read twice: by one espeak-ng voice (5 English accents x
#                   5 voice variants, 2 speeds, in turn) and by one of flite kal / awb / rms and
#                   festival kal (in turn): 806 clips
#   test-voices/    57 other sentences, each read by the held-out espeak-ng variants m7 and f5
#                   (accents in turn): 114 clips
#   test-engines/   the same 57 sentences by synthesisers never heard in training: flite slt,
#                   festival ked (diphone), festival slt (HTS): 171 clips
#   test-digits/    the recorded Asterisk English numbers 0..20 (one real speaker; the word is
#                   the file name), when scripts/fetch-data.sh speech has run: 21 clips
#   test-letters/   klettres' British English alphabet, A..Z spoken by one real speaker (the
#                   letter is the file name, as its sounds.xml names it), likewise: 26 clips
# Sentences: Brown's sentences of 4..9 words of letters only (hyphens split words; a sentence with
# a number, an abbreviation or any other symbol is skipped), every 17th in file order; every 8th
# of those is a test sentence, never spoken in training. Each split has SPLIT.tsv: one line per
# clip, "path<TAB>TRANSCRIPT" (path relative to the folder; the transcript upper-cased, letters
# and apostrophes, one space between words: the alphabet of Hugging Face's English CTC models).
# Every file is 16 kHz mono 16-bit WAV. sox runs with -R (no random dither), so the set is
# byte-for-byte the same on every run; its sha256 (of the sorted per-file sums) is printed last.
# Installs espeak-ng, flite, festival (+ voices) and sox when missing (needs root); fetches the
# Brown corpus when missing. Idempotent (.done marker). About 3 minutes on 2 cores.
# Run through scripts/fetch-data.sh spoken-sentences (it sets DATA_ROOT).
set -euo pipefail
: "${DATA_ROOT:?DATA_ROOT is not set: run scripts/fetch-data.sh spoken-sentences}"
here="$(cd "$(dirname "$0")" && pwd)"

out="$DATA_ROOT/speech/spoken-sentences"
set_sha256() {
  (cd "$out" && find . -type f \( -name '*.wav' -o -name '*.tsv' \) | LC_ALL=C sort |
    xargs sha256sum | sha256sum | cut -d' ' -f1)
}
if [ -f "$out/.done" ]; then
  echo "spoken-sentences: already in $out ($(find "$out" -name '*.wav' | wc -l) clips, sha256 $(set_sha256))"
  exit 0
fi

tools=(espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts sox)
missing=$(for p in "${tools[@]}"; do dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed' || echo "$p"; done)
if [ -n "$missing" ]; then
  echo "spoken-sentences: installing" $missing
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing >/dev/null
fi
brown="$DATA_ROOT/text/brown"
[ -f "$brown/.complete" ] || bash "$here/text.sh"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
rm -rf "$out"
mkdir -p "$out/train" "$out/test-voices" "$out/test-engines"

# One sentence per line: "SPOKEN<TAB>TRANSCRIPT", the chosen sentences in order.
for f in $(cd "$brown" && ls | grep -E '^c[a-r][0-9]+$' | LC_ALL=C sort); do cat "$brown/$f"; echo; done |
  LC_ALL=C awk '
    NF == 0 { next }
    {
      n = 0; ok = 1; spoken = ""
      for (i = 1; i <= NF; i++) {
        word = $i; sub(/\/[^\/]*$/, "", word)      # strip the POS tag
        if (word !~ /[A-Za-z]/) continue           # punctuation, quotes
        if (word !~ /^[A-Za-z'\''-]+$/) { ok = 0; break }
        gsub(/-/, " ", word)
        spoken = spoken (n ? " " : "") word
        n += split(word, parts, " ")
      }
      if (!ok || n < 4 || n > 9 || chosen == 460) next  # (no early exit: cat would get SIGPIPE)
      if (kept++ % 17 != 0) next
      text = toupper(spoken); gsub(/[^A-Z'\'' ]/, " ", text); gsub(/ +/, " ", text)
      sub(/^ /, "", text); sub(/ $/, "", text)
      print spoken "\t" text
      ++chosen
    }' >"$tmp/sentences.tsv"

# to16k IN OUT: 16 kHz mono 16-bit, no dither (-R: the same bytes on every run).
to16k() { sox -R -V1 "$1" -r 16000 -c 1 -b 16 "$2"; }

# say ENGINE VOICE TEXT OUT.wav [espeak speed]
say() {
  local engine="$1" voice="$2" text="$3" dst="$4" speed="${5:-160}"
  case "$engine" in
    espeak) espeak-ng -v "$voice" -s "$speed" -w "$tmp/made.wav" "$text" ;;
    flite) flite -voice "$voice" -t "$text" -o "$tmp/made.wav" ;;
    festival) echo "$text" | text2wave -eval "($voice)" -o "$tmp/made.wav" ;;
  esac
  to16k "$tmp/made.wav" "$dst"
}

accents=(en-us en-gb en-gb-scotland en-gb-x-rp en-029)
variants=(m1 m3 f1 f3 klatt)
others=("flite kal" "flite awb" "flite rms" "festival voice_kal_diphone")
j=0
while IFS=$'\t' read -r spoken text; do
  id=$(printf '%04d' "$j")
  if [ $((j % 8)) -eq 7 ]; then
    for k in 0 1; do
      variant=(m7 f5)
      accent="${accents[$(((j / 8 + k) % 5))]}"
      name="$id-espeak-$accent-${variant[$k]}.wav"
      say espeak "$accent+${variant[$k]}" "$spoken" "$out/test-voices/$name"
      printf '%s\t%s\n' "$name" "$text" >>"$out/test-voices/test-voices.tsv"
    done
    for voice in "flite slt" "festival voice_ked_diphone" "festival voice_cmu_us_slt_arctic_hts"; do
      read -r engine name <<<"$voice"
      file="$id-$engine-${name#voice_}.wav"
      say "$engine" "$name" "$spoken" "$out/test-engines/$file"
      printf '%s\t%s\n' "$file" "$text" >>"$out/test-engines/test-engines.tsv"
    done
  else
    accent="${accents[$((j % 5))]}"
    variant="${variants[$(((j / 5) % 5))]}"
    speed=$((j % 2 ? 175 : 145))
    file="$id-espeak-$accent-$variant-s$speed.wav"
    say espeak "$accent+$variant" "$spoken" "$out/train/$file" "$speed"
    printf '%s\t%s\n' "$file" "$text" >>"$out/train/train.tsv"
    read -r engine name <<<"${others[$((j % 4))]}"
    file="$id-$engine-${name#voice_}.wav"
    say "$engine" "$name" "$spoken" "$out/train/$file"
    printf '%s\t%s\n' "$file" "$text" >>"$out/train/train.tsv"
  fi
  j=$((j + 1))
  [ $((j % 50)) -eq 0 ] && echo "spoken-sentences: $j of 460 sentences"
done <"$tmp/sentences.tsv"

asterisk="$DATA_ROOT/speech/asterisk-core-sounds-en-wav/usr/share/asterisk/sounds/en_US_f_Allison/digits"
if [ -f "$asterisk/0.wav" ]; then
  mkdir -p "$out/test-digits"
  numbers=(ZERO ONE TWO THREE FOUR FIVE SIX SEVEN EIGHT NINE TEN ELEVEN TWELVE THIRTEEN FOURTEEN
    FIFTEEN SIXTEEN SEVENTEEN EIGHTEEN NINETEEN TWENTY)
  for i in "${!numbers[@]}"; do
    [ -f "$asterisk/$i.wav" ] || continue
    to16k "$asterisk/$i.wav" "$out/test-digits/asterisk-$i.wav"
    printf '%s\t%s\n' "asterisk-$i.wav" "${numbers[$i]}" >>"$out/test-digits/test-digits.tsv"
  done
else
  echo "spoken-sentences: no Asterisk recordings (scripts/fetch-data.sh speech): no test-digits"
fi
klettres="$DATA_ROOT/speech/klettres-data/usr/share/klettres/en_GB/alpha"
if [ -f "$klettres/a.ogg" ]; then
  mkdir -p "$out/test-letters"
  for letter in {a..z}; do
    [ -f "$klettres/$letter.ogg" ] || continue
    to16k "$klettres/$letter.ogg" "$out/test-letters/klettres-$letter.wav"
    printf '%s\t%s\n' "klettres-$letter.wav" "${letter^^}" >>"$out/test-letters/test-letters.tsv"
  done
else
  echo "spoken-sentences: no klettres recordings (scripts/fetch-data.sh speech): no test-letters"
fi
touch "$out/.done"
for split in "$out"/*/; do
  split="$(basename "$split")"
  echo "spoken-sentences: $out/$split: $(wc -l <"$out/$split/$split.tsv") clips"
done
echo "spoken-sentences: sha256 $(set_sha256)"
