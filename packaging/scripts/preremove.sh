#!/bin/sh
# Runs before the files go: deb `prerm remove|upgrade NEW|deconfigure|...`,
# rpm `%preun N` (N = 0 erase, 1 upgrade). Only a removal stops and
# disables the service; an upgrade keeps it running and enabled (postinstall
# restarts it on the new binary).
set -e
systemd_dir=${MESHD_SYSTEMD_DIR:-/run/systemd/system}
case "$1" in
remove | 0) ;;
*) exit 0 ;;
esac
if command -v systemctl >/dev/null 2>&1 && [ -d "$systemd_dir" ]; then
	systemctl stop meshd.service 2>/dev/null || true
	systemctl disable meshd.service 2>/dev/null || true
fi
exit 0
