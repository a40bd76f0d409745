"""The package as a user gets it: `python -m build` (sdist, then the wheel built from the
sdist), `pipx install` of the wheel into a temp location, then `jobtunnel --help`,
`jobtunnel init` and `jobtunnel service install --dry-run` for a fresh HOME.

Slow (about 20 s here with pip's cache warm): marked ``slow``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.helpers.deps import dependency_missing

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[2]
# What a build needs from the checkout; the rest (venv, caches, .git) is left behind.
SKIP = shutil.ignore_patterns(
    ".git",
    ".venv*",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".*_cache",
    ".hypothesis",
    "artifacts",
    "results",
)


def _run(argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    done = subprocess.run(
        argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=180, check=False
    )
    assert done.returncode == 0, f"{argv} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_wheel_and_sdist_install_with_pipx_and_init_works(tmp_path: Path) -> None:
    for module in ("build", "pipx"):
        if importlib.util.find_spec(module) is None:
            dependency_missing(f"{module} is not installed (pip install -e '.[test]')")
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=SKIP)
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "build", "--outdir", str(dist), str(source)])
    wheels = list(dist.glob("jobtunnel-*-py3-none-any.whl"))
    sdists = list(dist.glob("jobtunnel-*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, list(dist.iterdir())
    names = zipfile.ZipFile(wheels[0]).namelist()
    assert not [n for n in names if n.endswith((".so", ".pyd"))]  # pure Python
    templates = {n for n in names if n.startswith("jobtunnel/service_files/")}
    assert {
        "jobtunnel/service_files/jobtunnel.service",
        "jobtunnel/service_files/jobtunnel-tray.service",
        "jobtunnel/service_files/com.jobtunnel.daemon.plist",
        "jobtunnel/service_files/jobtunnel-task.xml",
    } <= templates

    home = tmp_path / "home"
    home.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("XDG_", "SSH_", "JOBTUNNEL_", "VIRTUAL_ENV", "PIPX_"))
    }
    env |= {
        "HOME": str(home),
        "PIPX_HOME": str(tmp_path / "pipx"),
        "PIPX_BIN_DIR": str(tmp_path / "bin"),
        "PIPX_MAN_DIR": str(tmp_path / "man"),
    }
    base = getattr(sys, "_base_executable", sys.executable)
    _run([sys.executable, "-m", "pipx", "install", "--python", base, str(wheels[0])], env)
    jobtunnel = str(tmp_path / "bin" / "jobtunnel")
    assert "usage: jobtunnel" in _run([jobtunnel, "--help"], env, home)
    said = _run([jobtunnel, "init"], env, home)
    assert "ssh-ed25519 " in said
    assert (home / ".config" / "jobtunnel" / "config.toml").is_file()
    assert (home / ".local" / "share" / "jobtunnel" / "id_ed25519").stat().st_mode & 0o777 == 0o600
    assert (home / "JobLogs").is_dir()
    # The login-service templates load from the installed package data.
    dry = _run([jobtunnel, "service", "install", "--dry-run"], env, home)
    assert "ExecStart=" in dry and "jobtunnel-managed-file" in dry
