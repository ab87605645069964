#!/bin/sh
# Runs after the files are in place: deb `postinst configure [OLD-VERSION]`,
# rpm `%post N` (N = 1 install, 2 upgrade). Members of group meshd may read
# status through the control socket. A first install leaves the service
# alone (it needs certificates first: see the README); an upgrade restarts
# it if it runs, so the new binary takes over, and never changes whether it
# is enabled.
set -e
systemd_dir=${MESHD_SYSTEMD_DIR:-/run/systemd/system}
etc=${MESHD_ETC:-/etc/meshd}

upgrade=0
case "$1" in
configure) [ -n "$2" ] && upgrade=1 ;;
[2-9] | [1-9][0-9]*) upgrade=1 ;;
esac

if ! getent group meshd >/dev/null 2>&1; then
	groupadd --system meshd 2>/dev/null || addgroup --system meshd
fi
chgrp meshd "$etc" "$etc/meshd.toml" 2>/dev/null || true
chmod 0750 "$etc" 2>/dev/null || true
if command -v systemctl >/dev/null 2>&1 && [ -d "$systemd_dir" ]; then
	systemctl daemon-reload || true
	if [ "$upgrade" = 1 ]; then
		systemctl try-restart meshd.service || true
	fi
fi
exit 0
