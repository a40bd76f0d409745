"""Where jobtunnel keeps its files: platformdirs' per-user folders.

Every location derives from the XDG variables (``XDG_CONFIG_HOME``, ``XDG_STATE_HOME``,
``XDG_DATA_HOME``, ``XDG_RUNTIME_DIR``) or ``HOME`` at call time, not at import, so tests
and several users on one machine each get their own tree.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP = "jobtunnel"

__all__ = [
    "config_file",
    "data_dir",
    "key_file",
    "known_hosts_file",
    "log_dir",
    "runtime_dir",
    "ssh_config_file",
    "ssh_known_hosts_file",
    "state_dir",
]


def _dirs() -> platformdirs.PlatformDirs:
    return platformdirs.PlatformDirs(APP, appauthor=False)


def config_file() -> Path:
    """The config file: ``--config`` wins, then ``JOBTUNNEL_CONFIG``, then the user dir."""
    override = os.environ.get("JOBTUNNEL_CONFIG")
    if override:
        return Path(override).expanduser()
    return Path(_dirs().user_config_dir) / "config.toml"


def state_dir() -> Path:
    """Persisted state: endpoints, assigned ports, pinned host keys."""
    return Path(_dirs().user_state_dir)


def data_dir() -> Path:
    """Long-lived user data: jobtunnel's own SSH key."""
    return Path(_dirs().user_data_dir)


def key_file() -> Path:
    """jobtunnel's own private key (the public key sits beside it with ``.pub``)."""
    return data_dir() / "id_ed25519"


def known_hosts_file() -> Path:
    """Host keys pinned on first use, in OpenSSH known_hosts format."""
    return state_dir() / "known_hosts"


def ssh_config_file() -> Path:
    """The OpenSSH client config of every live cluster (``Include`` it from ~/.ssh/config)."""
    return data_dir() / "ssh_config"


def ssh_known_hosts_file() -> Path:
    """The pinned host keys again, keyed by the ssh_config's aliases (``HostKeyAlias``)."""
    return data_dir() / "ssh_known_hosts"


def runtime_dir() -> Path:
    """Sockets and the pid lock; falls back to the state dir where there is no runtime dir."""
    if os.name == "posix" and not os.environ.get("XDG_RUNTIME_DIR"):
        # platformdirs would pick a shared /tmp/runtime-UID with a warning; keep it private.
        return state_dir() / "run"
    return Path(_dirs().user_runtime_dir)


def log_dir() -> Path:
    """Rotating log files."""
    return Path(_dirs().user_log_dir)
