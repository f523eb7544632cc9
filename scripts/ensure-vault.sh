#!/usr/bin/env bash
# Ensures bin/vault is a Vault binary for the test bed and the demo: the
# `vault` on PATH if there is one, else one built from the Go module in
# tools/vault (about 10 minutes and 4 GB of module cache the first time),
# cached outside the clone so fresh clones on this machine reuse it.
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(sed -n 's/^\s*github.com\/hashicorp\/vault v\([0-9.]*\).*/\1/p' tools/vault/go.mod | head -1)
cache="${XDG_CACHE_HOME:-$HOME/.cache}/podlease/vault-$version"
mkdir -p bin
if path=$(command -v vault 2>/dev/null); then
  ln -sf "$path" bin/vault
  echo "ensure-vault: using $path"
  exit 0
fi
if [[ -x bin/vault ]] && bin/vault version >/dev/null 2>&1; then
  exit 0
fi
if [[ ! -x "$cache" ]]; then
  echo "ensure-vault: building Vault $version from its Go module (first time only: ~10 min)" >&2
  mkdir -p "$(dirname "$cache")"
  (cd tools/vault && CGO_ENABLED=0 go build -trimpath -o "$cache.tmp" . )
  mv "$cache.tmp" "$cache"
fi
ln -sf "$cache" bin/vault
echo "ensure-vault: using $cache"
