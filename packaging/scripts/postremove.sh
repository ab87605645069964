#!/bin/sh
# Runs after the files went: deb `postrm remove|purge|upgrade|...`, rpm
# `%postun N` (N = 0 erase, 1 upgrade). systemd forgets the unit file.
set -e
systemd_dir=${MESHD_SYSTEMD_DIR:-/run/systemd/system}
if command -v systemctl >/dev/null 2>&1 && [ -d "$systemd_dir" ]; then
	systemctl daemon-reload || true
fi
exit 0
