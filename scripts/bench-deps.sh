#!/usr/bin/env bash
# bench-deps.sh installs, with apt-get, the tools `make bench` (e2e/bench)
# needs on top of the lab's (scripts/lab-deps.sh): wg (wireguard-tools) to
# configure the wireguard-go comparator, ping (iputils-ping) for the latency
# figures, and iperf3 for the throughput figures. wireguard-go and Nebula are
# not packages: the bench builds them from source into a temporary directory
# at run time. It is idempotent: when every tool is already on PATH it does
# nothing, and it runs `apt-get update` only when something is missing.
#
# Usage (as root): scripts/bench-deps.sh
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
	echo "bench-deps.sh: must run as root (apt-get install)" >&2
	exit 1
fi

# command -> Debian package that ships it.
declare -A pkg_of=(
	[wg]=wireguard-tools
	[ping]=iputils-ping
	[iperf3]=iperf3
)

# Tools may live in sbin directories that a non-login PATH lacks.
export PATH="$PATH:/usr/sbin:/sbin:/usr/bin:/bin"

missing=()
for cmd in "${!pkg_of[@]}"; do
	if ! command -v "$cmd" >/dev/null 2>&1; then
		missing+=("${pkg_of[$cmd]}")
	fi
done

if [ "${#missing[@]}" -eq 0 ]; then
	echo "bench-deps.sh: all bench tools present"
	exit 0
fi

mapfile -t pkgs < <(printf '%s\n' "${missing[@]}" | sort -u)
echo "bench-deps.sh: installing ${pkgs[*]}"

export DEBIAN_FRONTEND=noninteractive
# iperf3 asks whether to start a system-wide daemon; the bench starts its own
# server inside a namespace, so answer no before it asks.
echo "iperf3 iperf3/start_daemon boolean false" | debconf-set-selections

# --no-install-recommends keeps wireguard-tools from pulling in the kernel
# module packages: the bench measures the userspace wireguard-go only.
apt-get update -q
apt-get install -y -q --no-install-recommends "${pkgs[@]}"

for cmd in "${!pkg_of[@]}"; do
	if ! command -v "$cmd" >/dev/null 2>&1; then
		echo "bench-deps.sh: $cmd still missing after installing ${pkg_of[$cmd]}" >&2
		exit 1
	fi
done
echo "bench-deps.sh: done"
