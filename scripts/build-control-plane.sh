#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager and kube-scheduler from the k8s.io/kubernetes Go
# module (through the Go module proxy) into a cache outside the repository, keyed by version.
# Prints the directory holding the binaries. Safe to run concurrently: builds into a temp dir, then renames.
set -euo pipefail
K8S_VERSION="${K8S_VERSION:-v1.37.2}"
CACHE_ROOT="${OCRJOB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ocrjob}"
out="$CACHE_ROOT/kubernetes-$K8S_VERSION/bin"
components=(kube-apiserver kube-controller-manager kube-scheduler)

have_all() { for c in "${components[@]}"; do [ -x "$out/$c" ] || return 1; done; }
if have_all; then echo "$out"; exit 0; fi

command -v go >/dev/null || { echo "Go is required to build the control plane (https://go.dev/dl)" >&2; exit 1; }
start=$(date +%s)
work=$(mktemp -d "${TMPDIR:-/tmp}/ocrjob-k8s-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"
staging_version="v0.${K8S_VERSION#v1.}"
cat > go.mod <<MOD
module ocrjob.local/controlplane

go 1.25
MOD
# k8s.io/kubernetes points its staging modules at ./staging; as a dependency they must come from the proxy.
gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
grep -oE '^\s*k8s\.io/[a-z0-9-]+ => \./staging' "$gomod" | awk '{print $1}' | sort -u | while read -r mod; do
  echo "replace $mod => $mod $staging_version" >> go.mod
done
cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
)
GO
go get "k8s.io/kubernetes@$K8S_VERSION" >&2
go mod tidy -e >&2 || true
minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
mkdir -p "$work/bin"
for c in "${components[@]}"; do
  echo "building $c $K8S_VERSION ..." >&2
  CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$work/bin/$c" "k8s.io/kubernetes/cmd/$c" >&2
done
mkdir -p "$(dirname "$out")"
rm -rf "$out.tmp.$$"; mv "$work/bin" "$out.tmp.$$"
if have_all; then rm -rf "$out.tmp.$$"; else rm -rf "$out"; mv "$out.tmp.$$" "$out"; fi
echo "built control plane $K8S_VERSION in $(( $(date +%s) - start ))s" >&2
echo "$out"
