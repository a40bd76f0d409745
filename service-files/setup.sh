#!/usr/bin/env bash
# Sets up jobtunnel for the current user on Debian/Ubuntu with its defaults:
# system packages, a private virtualenv, the `jobtunnel` command in ~/.local/bin,
# the commented default config and the watched folder ~/JobLogs.
# Re-running it upgrades jobtunnel and changes nothing else that exists.
set -euo pipefail
cd "$(dirname "$0")/.."

SYSTEM_PACKAGES=(python3 python3-venv openssh-client)
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
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade .
mkdir -p "$BIN"
ln -sfn "$VENV/bin/jobtunnel" "$BIN/jobtunnel"
echo "==> jobtunnel is $BIN/jobtunnel"
case ":$PATH:" in *":$BIN:"*) ;; *) echo "    (add $BIN to your PATH to type just 'jobtunnel')" ;; esac

"$BIN/jobtunnel" config init
mkdir -p "$HOME/JobLogs"
echo "==> drop or download Rescale job logs into $HOME/JobLogs"
echo "    see what jobtunnel finds in one: jobtunnel scan ~/JobLogs/<file>"
