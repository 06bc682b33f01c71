#!/usr/bin/env bash
# Installs (apt, non-interactive) what a real test node needs and is missing: container runtime, CNI
# plugins, image tooling, iptables. Idempotent: a no-op (no apt call) when everything is installed.
set -euo pipefail
# containerd/runc: the runtime (crun fails on this machine's hybrid cgroups); containernetworking-plugins:
# CNI bridge + host-local in /usr/lib/cni; buildah/debootstrap: images without a Docker daemon; iptables:
# the pod network's isolation and DNAT; conntrack: flush our DNAT entries at teardown; iproute2: the
# bridge; util-linux: flock/setpriv/nsenter; gcc/libc6-dev: the static pause binary.
packages=(containerd runc containernetworking-plugins buildah debootstrap iptables conntrack iproute2 util-linux
          gcc libc6-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ "${#missing[@]}" -eq 0 ] && exit 0
sudo=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "missing packages ${missing[*]}: run this script as root" >&2; exit 1; }
  sudo=(sudo)
fi
echo "installing ${missing[*]} ..." >&2
start=$(date +%s)
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends -o Dpkg::Options::=--force-confold "${missing[@]}" >&2
echo "installed ${missing[*]} in $(( $(date +%s) - start ))s" >&2
