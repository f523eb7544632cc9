#!/usr/bin/env bash
# Runs every fuzz target of the product module for FUZZTIME each (default
# 30s). The seed corpora (f.Add and testdata/fuzz) also run in every plain
# `go test`; this finds new inputs.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-30s}
total=0
while IFS=: read -r file _ line; do
  name=$(sed -E 's/^func (Fuzz[A-Za-z0-9_]*).*/\1/' <<<"$line")
  pkg=./$(dirname "$file")
  echo "fuzz: $pkg $name for $fuzztime"
  go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "$pkg"
  total=$((total + 1))
done < <(grep -rn --include='*_test.go' -E '^func Fuzz[A-Za-z0-9_]*\(f \*testing\.F\)' internal)
echo "fuzz: $total targets, $fuzztime each: no failures"
