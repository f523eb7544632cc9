#!/usr/bin/env bash
# Ensures Debian's PostgreSQL server binaries (initdb, pg_ctl, postgres)
# are installed; the test bed starts its own throwaway cluster.
set -euo pipefail
if compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  exit 0
fi
echo "ensure-postgres: installing Debian's postgresql package" >&2
sudo=""
[[ $(id -u) -eq 0 ]] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends postgresql >/dev/null
# The package starts a cluster of its own; the tests do not use it.
$sudo service postgresql stop >/dev/null 2>&1 || true
