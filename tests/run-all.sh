#!/usr/bin/env bash
# Sets up everything the test suite needs on a Debian machine, then runs it:
# system packages, a virtualenv with the project and its test extras, ruff, import-linter,
# mypy, pytest.
# Usage: bash tests/run-all.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

SYSTEM_PACKAGES=(python3 python3-venv python3-dev gcc openssh-server openssh-client autossh putty-tools xvfb trayer dbus dunst xdotool imagemagick libgirepository1.0-dev libcairo2-dev pkg-config gir1.2-gtk-3.0 gir1.2-ayatanaappindicator3-0.1 systemd desktop-file-utils)

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
for pkg in "${SYSTEM_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "==> installing system packages: ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

VENV=${JOBTUNNEL_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
    echo "==> creating $VENV"
    python3 -m venv "$VENV"
fi
echo "==> installing jobtunnel and its test tools into $VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[test]"

# mypy cannot follow setuptools' editable finder for the renamed packages, so it reads
# them through a tree of symlinks laid out the way they are installed.
mkdir -p build/typecheck/jobtunnel
ln -sfn ../../../daemon build/typecheck/jobtunnel/daemon
ln -sfn ../../../tray build/typecheck/jobtunnel/tray

echo "==> ruff"
"$VENV/bin/ruff" check daemon tray tests benchmarks
"$VENV/bin/ruff" format --check daemon tray tests benchmarks
echo "==> import contracts (pyproject: [tool.importlinter])"
"$VENV/bin/lint-imports" --no-cache
echo "==> mypy"
(cd build/typecheck && "../../$VENV/bin/mypy" --config-file ../../pyproject.toml \
    -p jobtunnel.daemon -p jobtunnel.tray)
MYPYPATH=build/typecheck "$VENV/bin/mypy" --config-file pyproject.toml --explicit-package-bases benchmarks
# Windows and macOS cannot run here: their branches are type-checked as those platforms.
for platform in win32 darwin; do
    (cd build/typecheck && "../../$VENV/bin/mypy" --config-file ../../pyproject.toml \
        --platform "$platform" -p jobtunnel.daemon -p jobtunnel.tray)
done
echo "==> pytest"
exec "$VENV/bin/python" -m pytest "$@"
