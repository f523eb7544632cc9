#!/usr/bin/env bash
# Ensures bin/vault is a Vault binary for the test bed and the demo: the
# `vault` on PATH if there is one, else one built from the Go module in
# tools/vault (about 10 minutes and 4 GB of module cache the first time),
# cached outside the clone so fresh clones on this machine reuse it.
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(awk '$1 == "github.com/hashicorp/vault" { print $2 } $1 == "require" && $2 == "github.com/hashicorp/vault" { print $3 }' tools/vault/go.mod | head -1)
[[ -n "$version" ]] || { echo "ensure-vault: no github.com/hashicorp/vault requirement in tools/vault/go.mod" >&2; exit 1; }
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
