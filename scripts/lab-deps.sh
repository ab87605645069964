#!/usr/bin/env bash
# lab-deps.sh installs, with apt-get, the programs that `make test` and
# `make demo` (and, with --bench, `make bench`) run, from the one list in
# scripts/programs.txt ("program package target" per line). A test
# (internal/programs) fails when Go code runs a program that list lacks, so
# what this script installs is what the tests need on a machine that has
# never seen the project. It is idempotent: when every listed program is
# already on PATH it does nothing, and it runs `apt-get update` only when
# something is missing.
#
# Usage (as root): scripts/lab-deps.sh [--bench]
set -euo pipefail

list="$(dirname "$0")/programs.txt"
targets=" test "
case "${1:-}" in
--bench) targets=" test bench " ;;
"") ;;
*)
	echo "usage: lab-deps.sh [--bench]" >&2
	exit 2
	;;
esac

# Tools may live in sbin directories that a non-login PATH lacks.
export PATH="$PATH:/usr/sbin:/sbin:/usr/bin:/bin"

# program -> package, for the programs of the chosen targets.
declare -A pkg_of=()
while read -r prog pkg target rest; do
	case "$prog" in "" | "#"*) continue ;; esac
	if [ -z "$target" ] || { [ -n "$rest" ] && [ "${rest:0:1}" != "#" ]; }; then
		echo "lab-deps.sh: $list: bad line: $prog $pkg $target $rest" >&2
		exit 2
	fi
	if [[ "$targets" == *" $target "* ]]; then
		pkg_of[$prog]=$pkg
	fi
done <"$list"

missing=()
for prog in "${!pkg_of[@]}"; do
	command -v "$prog" >/dev/null 2>&1 && continue
	if [ "${pkg_of[$prog]}" = "-" ]; then
		echo "lab-deps.sh: $prog is not on PATH; install it first (see the README's set-up commands)" >&2
		exit 1
	fi
	missing+=("${pkg_of[$prog]}")
done

if [ "${#missing[@]}" -eq 0 ]; then
	echo "lab-deps.sh: all ${#pkg_of[@]} programs present"
	exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
	echo "lab-deps.sh: must run as root to install ${missing[*]} (apt-get install)" >&2
	exit 1
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

for prog in "${!pkg_of[@]}"; do
	if ! command -v "$prog" >/dev/null 2>&1; then
		echo "lab-deps.sh: $prog still missing after installing ${pkg_of[$prog]}" >&2
		exit 1
	fi
done
echo "lab-deps.sh: done"
