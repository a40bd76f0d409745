"""The environment of an isolated user: every jobtunnel path lives under one home."""

from __future__ import annotations

import os
from pathlib import Path


def isolated_env(home: Path, runtime: Path | None = None) -> dict[str, str]:
    """Environment of a user living in ``home``; ``runtime`` (XDG_RUNTIME_DIR, where the
    control socket goes) defaults to ``home/run``: pass a short path when ``home`` is deep,
    since a Unix socket path is limited to about 100 bytes. Creates ``runtime`` (0700)."""
    runtime = runtime or home / "run"
    env = dict(os.environ)
    # RESCALE_API_KEY: a developer's real key must not make test daemons ask Rescale.
    for var in (
        "JOBTUNNEL_CONFIG",
        "SSH_AUTH_SOCK",
        "NOTIFY_SOCKET",
        "XDG_RUNTIME_DIR",
        "RESCALE_API_KEY",
    ):
        env.pop(var, None)
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_STATE_HOME=str(home / ".local" / "state"),
        XDG_DATA_HOME=str(home / ".local" / "share"),
        XDG_CACHE_HOME=str(home / ".cache"),
        XDG_RUNTIME_DIR=str(runtime),
    )
    runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
    return env
