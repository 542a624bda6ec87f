#!/usr/bin/env bash
# Fashion-MNIST (see scripts/fetch-data.sh): 60000 train + 10000 test 28x28 grey images, 10 classes, as
# gzipped IDX files from Debian's dataset-fashion-mnist, linked into $DATA_ROOT/fashion-mnist/:
#   train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz
#   t10k-labels-idx1-ubyte.gz
# The package is installed when missing (as root: apt-get install; otherwise it is downloaded and
# unpacked under $DATA_ROOT/.debs without running anything from it). Idempotent.
#   usage: DATA_ROOT=data bash scripts/fetch/fashion-mnist.sh   (or: scripts/fetch-data.sh fashion-mnist)
set -euo pipefail
: "${DATA_ROOT:?set DATA_ROOT (scripts/fetch-data.sh does)}"
files="train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz"
system_dir=/usr/share/datasets/fashion-mnist
out="$DATA_ROOT/fashion-mnist"

have_all() {  # have_all DIR
  local f
  for f in $files; do [ -s "$1/$f" ] || return 1; done
}

src="$system_dir"
if ! have_all "$src"; then
  if [ "$(id -u)" = 0 ]; then
    echo "fashion-mnist: apt-get install dataset-fashion-mnist"
    DEBIAN_FRONTEND=noninteractive apt-get install -y dataset-fashion-mnist >/dev/null
  else
    # Not root: fetch the .deb and unpack it (dpkg-deb -x runs no maintainer scripts).
    debs="$DATA_ROOT/.debs"
    mkdir -p "$debs"
    if ! have_all "$debs/root$system_dir"; then
      echo "fashion-mnist: apt-get download dataset-fashion-mnist"
      (cd "$debs" && apt-get download dataset-fashion-mnist >/dev/null)
      dpkg-deb -x "$(ls "$debs"/dataset-fashion-mnist_*.deb | head -n 1)" "$debs/root"
    fi
    src="$debs/root$system_dir"
  fi
fi
have_all "$src" || { echo "fashion-mnist: files missing under $src" >&2; exit 1; }

mkdir -p "$out"
for f in $files; do
  # ln -sfn replaces a stale link and leaves a correct one as it was.
  [ "$(readlink "$out/$f" 2>/dev/null || true)" = "$src/$f" ] || ln -sfn "$src/$f" "$out/$f"
done
echo "fashion-mnist: $(cd "$out" && ls | tr '\n' ' ')in $out"
