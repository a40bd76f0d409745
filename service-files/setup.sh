#!/usr/bin/env bash
# Sets up and starts jobtunnel for the current user on Debian/Ubuntu with its defaults:
# system packages, a private virtualenv with the tray's PyGObject, the `jobtunnel` command
# in ~/.local/bin, a key, the commented default config, the watched folder ~/JobLogs, and
# the login service (daemon and tray), started now.
# Re-running it upgrades jobtunnel and changes nothing else that exists.
set -euo pipefail
cd "$(dirname "$0")/.."

# The tray's menu needs PyGObject, built from source against these (about 15 s).
SYSTEM_PACKAGES=(python3 python3-venv python3-dev gcc openssh-client
    libgirepository1.0-dev libcairo2-dev pkg-config gir1.2-gtk-3.0
    gir1.2-ayatanaappindicator3-0.1)
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
for pkg in "${SYSTEM_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ] && command -v apt-get >/dev/null; then
    echo "==> installing system packages: ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

DATA=${XDG_DATA_HOME:-$HOME/.local/share}/jobtunnel
VENV=$DATA/venv
BIN=$HOME/.local/bin
if [ ! -x "$VENV/bin/python" ]; then
    echo "==> creating $VENV"
    mkdir -p "$DATA"
    python3 -m venv "$VENV"
fi
echo "==> installing jobtunnel into $VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade ".[tray]"
mkdir -p "$BIN"
ln -sfn "$VENV/bin/jobtunnel" "$BIN/jobtunnel"
echo "==> jobtunnel is $BIN/jobtunnel"
case ":$PATH:" in *":$BIN:"*) ;; *) echo "    (add $BIN to your PATH to type just 'jobtunnel')" ;; esac

# A key, the commented default config and the watched folder; prints the Rescale steps.
"$BIN/jobtunnel" init --no-service

echo "==> starting jobtunnel at every login, and now"
if ! "$BIN/jobtunnel" service install; then
    # No service manager answered (e.g. no systemd user session): start it for this session.
    echo "==> starting the daemon in the background (log: $("$VENV/bin/python" -c \
        'from jobtunnel.daemon.logs import log_file; print(log_file())'))"
    nohup "$BIN/jobtunnel" run >/dev/null 2>&1 &
    if [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ]; then
        nohup "$BIN/jobtunnel" tray >/dev/null 2>&1 &
    fi
fi
echo "==> drop or download Rescale job logs into $HOME/JobLogs; \`jobtunnel status\` shows the tunnels"
