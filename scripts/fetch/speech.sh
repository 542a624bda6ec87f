#!/usr/bin/env bash
# Speech data from Debian packages (see scripts/fetch-data.sh), unpacked, never installed:
#   asterisk-core-sounds-{en,es,fr,it,ru}-wav  one speaker per language, 8 kHz mono WAV prompts
#   klettres-data                              1836 Ogg Vorbis clips, 20 languages (letters, syllables)
# Layout: $DATA_ROOT/speech/<package>/ holds the package's own tree (usr/share/...).
# Idempotent: a package whose directory already holds a .done marker is skipped.
# Run through scripts/fetch-data.sh speech (it sets DATA_ROOT).
set -euo pipefail
: "${DATA_ROOT:?DATA_ROOT is not set: run scripts/fetch-data.sh speech}"

packages=(asterisk-core-sounds-en-wav asterisk-core-sounds-es-wav asterisk-core-sounds-fr-wav
          asterisk-core-sounds-it-wav asterisk-core-sounds-ru-wav klettres-data)
out="$DATA_ROOT/speech"
mkdir -p "$out"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

for pkg in "${packages[@]}"; do
  dest="$out/$pkg"
  if [ -f "$dest/.done" ]; then
    echo "speech: $pkg already in $dest"
    continue
  fi
  echo "speech: downloading $pkg"
  # apt's log stays hidden unless the download fails (it warns about the _apt sandbox user).
  if ! (cd "$work" && apt-get download "$pkg" >"$work/apt.log" 2>&1); then
    cat "$work/apt.log" >&2
    echo "speech: apt-get download $pkg failed (try 'apt-get update' first; is the package in your sources?)" >&2
    exit 1
  fi
  deb="$(ls "$work"/"${pkg}"_*.deb)"
  rm -rf "$dest"
  mkdir -p "$dest"
  dpkg-deb -x "$deb" "$dest"
  rm -f "$deb"
  touch "$dest/.done"
  echo "speech: $pkg -> $dest ($(find "$dest" -type f \( -name '*.wav' -o -name '*.ogg' -o -name '*.flac' \) | wc -l) audio files)"
done
