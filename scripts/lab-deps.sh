#!/usr/bin/env bash
# lab-deps.sh installs, with apt-get, the tools the e2e network-namespace lab
# (e2e/lab) uses: ip and ss (iproute2), sysctl (procps), iptables and nft for
# the NAT recipes, conntrack to flush and inspect NAT mappings, iperf3 for
# throughput scenarios, and coturn (turnserver, turnutils_uclient,
# turnutils_peer) as the reference TURN server. tshark is not used. With
# --bench it also installs what `make bench` needs: wg (wireguard-tools, to
# configure wireguard-go) and ping (iputils-ping). It is idempotent: when
# every tool is already on PATH it does nothing, and it runs `apt-get update`
# only when something is missing.
#
# Usage (as root): scripts/lab-deps.sh [--bench]
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
	echo "lab-deps.sh: must run as root (apt-get install)" >&2
	exit 1
fi

# command -> Debian package that ships it.
declare -A pkg_of=(
	[ip]=iproute2
	[ss]=iproute2
	[sysctl]=procps
	[iptables]=iptables
	[nft]=nftables
	[conntrack]=conntrack
	[iperf3]=iperf3
	[turnserver]=coturn
	[turnutils_uclient]=coturn
	[turnutils_peer]=coturn
)

case "${1:-}" in
--bench)
	pkg_of[wg]=wireguard-tools
	pkg_of[ping]=iputils-ping
	;;
"") ;;
*)
	echo "usage: lab-deps.sh [--bench]" >&2
	exit 2
	;;
esac

# Tools may live in sbin directories that a non-login PATH lacks.
export PATH="$PATH:/usr/sbin:/sbin:/usr/bin:/bin"

missing=()
for cmd in "${!pkg_of[@]}"; do
	if ! command -v "$cmd" >/dev/null 2>&1; then
		missing+=("${pkg_of[$cmd]}")
	fi
done

if [ "${#missing[@]}" -eq 0 ]; then
	echo "lab-deps.sh: all lab tools present"
	exit 0
fi

# Deduplicate and sort the package list for a stable log line.
mapfile -t pkgs < <(printf '%s\n' "${missing[@]}" | sort -u)
echo "lab-deps.sh: installing ${pkgs[*]}"

export DEBIAN_FRONTEND=noninteractive
# iperf3 asks whether to start a system-wide daemon; the lab starts its own
# servers inside namespaces, so answer no before it asks.
echo "iperf3 iperf3/start_daemon boolean false" | debconf-set-selections

# --no-install-recommends also keeps wireguard-tools from pulling in the
# kernel module packages: the bench measures the userspace wireguard-go.
# Services that packages try to start on install (coturn's turnserver) must not
# run on the host: the lab starts its own instances inside namespaces.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
	printf '#!/bin/sh\nexit 101\n' >"$policy"
	chmod 755 "$policy"
	created_policy=1
fi
cleanup() {
	if [ "$created_policy" -eq 1 ]; then
		rm -f "$policy"
	fi
}
trap cleanup EXIT

apt-get update -q
apt-get install -y -q --no-install-recommends "${pkgs[@]}"

for cmd in "${!pkg_of[@]}"; do
	if ! command -v "$cmd" >/dev/null 2>&1; then
		echo "lab-deps.sh: $cmd still missing after installing ${pkg_of[$cmd]}" >&2
		exit 1
	fi
done
echo "lab-deps.sh: done"
