#!/usr/bin/env bash
# Ensures bin/kubernetes/ holds the Kubernetes commands of the test bed's node
# (kube-apiserver, kubelet, kube-controller-manager, kube-scheduler, kubectl),
# built from the k8s.io/kubernetes Go module through the wrapper module in
# tools/kubernetes and cached outside the clone, so fresh clones on this
# machine reuse them. The first build took 43 minutes on two cores shared
# with other builds (20 minutes of CPU) and takes about 2 GB of module and
# build cache.
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ { print $2 } $1 == "require" && $2 == "k8s.io/kubernetes" { print $3 }' tools/kubernetes/go.mod | head -1)
[[ -n "$version" ]] || { echo "ensure-kubernetes: no k8s.io/kubernetes requirement in tools/kubernetes/go.mod" >&2; exit 1; }
cache="${XDG_CACHE_HOME:-$HOME/.cache}/podlease/kubernetes-$version"
commands=(kube-apiserver kubelet kube-controller-manager kube-scheduler kubectl)
complete() {
  local c
  for c in "${commands[@]}"; do [[ -x "$1/$c" ]] || return 1; done
}
if ! complete "$cache"; then
  echo "ensure-kubernetes: building Kubernetes $version from its Go module (first time only: 15-45 min on two busy cores)" >&2
  minor=${version#v1.}; minor=${minor%%.*}
  x=""
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    x+=" -X $p.gitVersion=$version -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
  done
  pkgs=()
  for c in "${commands[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
  mkdir -p "$(dirname "$cache")"
  rm -rf "$cache.tmp"
  mkdir -p "$cache.tmp"
  (cd tools/kubernetes && CGO_ENABLED=0 nice go build -trimpath -ldflags "-s -w$x" -o "$cache.tmp/" "${pkgs[@]}")
  rm -rf "$cache"
  mv "$cache.tmp" "$cache"
fi
mkdir -p bin
ln -sfn "$cache" bin/kubernetes
echo "ensure-kubernetes: using $cache"
