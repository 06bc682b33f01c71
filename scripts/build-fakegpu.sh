#!/usr/bin/env bash
# Builds the fake-GPU device plugin (tests/support/fakegpu) into a cache outside the repository, keyed by
# a hash of its sources. Prints the path of the binary. Safe to run concurrently (build, then rename).
set -euo pipefail
src="$(cd "$(dirname "$0")/../tests/support/fakegpu" && pwd)"
CACHE_ROOT="${OCRJOB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ocrjob}"
hash=$(cd "$src" && cat go.mod go.sum ./*.go | sha256sum | cut -c1-16)
out="$CACHE_ROOT/fakegpu-$hash/fakegpu"
if [ -x "$out" ]; then echo "$out"; exit 0; fi
GO="$(command -v go || echo /usr/local/go/bin/go)"
[ -x "$GO" ] || { echo "Go is required to build the fake-GPU device plugin (https://go.dev/dl)" >&2; exit 1; }
mkdir -p "$(dirname "$out")"
start=$(date +%s)
(cd "$src" && CGO_ENABLED=0 "$GO" build -trimpath -ldflags "-s -w" -o "$out.tmp.$$" .) >&2
mv -f "$out.tmp.$$" "$out"
echo "built fakegpu in $(( $(date +%s) - start ))s" >&2
echo "$out"
