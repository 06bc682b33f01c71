#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager, kube-scheduler and kubelet from the k8s.io/kubernetes Go
# module (through the Go module proxy) into a cache outside the repository, keyed by version.
# Prints the directory holding the binaries. Only missing binaries are built (a cache made before kubelet
# was added gains just kubelet). Safe to run concurrently: builds into a temp dir, then renames each binary
# into place (rename is atomic; a running binary is never overwritten in place).
set -euo pipefail
K8S_VERSION="${K8S_VERSION:-v1.37.2}"
CACHE_ROOT="${OCRJOB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ocrjob}"
out="$CACHE_ROOT/kubernetes-$K8S_VERSION/bin"
components=(kube-apiserver kube-controller-manager kube-scheduler kubelet)

missing=()
for c in "${components[@]}"; do [ -x "$out/$c" ] || missing+=("$c"); done
if [ "${#missing[@]}" -eq 0 ]; then echo "$out"; exit 0; fi

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
{
  printf '//go:build tools\n\npackage tools\n\nimport (\n'
  for c in "${components[@]}"; do printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$c"; done
  printf ')\n'
} > tools.go
go get "k8s.io/kubernetes@$K8S_VERSION" >&2
go mod tidy -e >&2 || true
minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
mkdir -p "$work/bin" "$out"
for c in "${missing[@]}"; do
  echo "building $c $K8S_VERSION ..." >&2
  CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$work/bin/$c" "k8s.io/kubernetes/cmd/$c" >&2
  # Same filesystem as $out? Not necessarily (TMPDIR): copy next to it first, then rename.
  cp "$work/bin/$c" "$out/.$c.tmp.$$" && mv -f "$out/.$c.tmp.$$" "$out/$c"
done
echo "built ${missing[*]} $K8S_VERSION in $(( $(date +%s) - start ))s" >&2
echo "$out"
