#!/usr/bin/env bash
# Ensures Debian's containerd, runc, etcd and CNI plugins are installed for
# the test bed's Kubernetes node. No service is started or enabled: the test
# bed runs each daemon itself, with its own configuration and state.
set -euo pipefail
need=()
[[ -x /usr/bin/containerd && -x /usr/bin/ctr ]] || need+=(containerd)
[[ -x /usr/sbin/runc || -x /usr/bin/runc ]] || need+=(runc)
[[ -x /usr/bin/etcd ]] || need+=(etcd-server)
[[ -x /usr/lib/cni/loopback ]] || need+=(containernetworking-plugins)
command -v unshare >/dev/null || need+=(util-linux)
[[ ${#need[@]} -eq 0 ]] && exit 0
echo "ensure-node: installing Debian's ${need[*]}" >&2
sudo=""
[[ $(id -u) -eq 0 ]] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
apt=($sudo apt-get -o DPkg::Lock::Timeout=900 -y -qq --no-install-recommends)
"${apt[@]}" update
# policy-rc.d keeps any package script from starting a daemon of its own.
had_policy=0
[[ -e /usr/sbin/policy-rc.d ]] && had_policy=1
if [[ $had_policy -eq 0 ]]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
  $sudo chmod +x /usr/sbin/policy-rc.d
fi
trap '[[ $had_policy -eq 1 ]] || $sudo rm -f /usr/sbin/policy-rc.d' EXIT
"${apt[@]}" install "${need[@]}" >/dev/null
