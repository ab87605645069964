#!/bin/sh
# Members of group meshd may read status through the control socket.
set -e
if ! getent group meshd >/dev/null 2>&1; then
	groupadd --system meshd 2>/dev/null || addgroup --system meshd
fi
chgrp meshd /etc/meshd /etc/meshd/meshd.toml 2>/dev/null || true
chmod 0750 /etc/meshd
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
fi
exit 0
