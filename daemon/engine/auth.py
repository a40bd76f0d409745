"""Client authentication: which private keys to offer, the agent, and ~/.ssh/config.

Keys come from the configured list (``ssh.identity_files``), else jobtunnel's own key,
then an ``IdentityFile`` that ~/.ssh/config names for the host, then OpenSSH's default
key names. The agent (``IdentityAgent`` from the config, else ``SSH_AUTH_SOCK``) is used
by asyncssh as well. Password and keyboard-interactive authentication are always off:
the daemon runs unattended and must never prompt.

asyncssh itself never reads ~/.ssh/config: the host is chosen by a job log, an untrusted
file, so a ``Host *`` block's ``Hostname``, ``Port``, ``User``, ``ProxyCommand``,
``ProxyJump``, forwards or ``LocalCommand`` must not steer or extend the connection.
Only the two identity settings above are read from it, here. Algorithm settings are
ignored too: ``ssh.ciphers`` governs, and asyncssh's defaults for the rest are modern.

Encrypted keys ask the passphrase callback once per file; the answer is kept in memory
for the life of the :class:`KeyLoader` so reconnects do not ask again. Passphrases and
key material are never logged.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import asyncssh

from .. import paths
from ..files import permission_problem

__all__ = [
    "KeyLoader",
    "PassphraseCallback",
    "agent_path",
    "auth_options",
    "default_identity_files",
    "ssh_config_identity_files",
]

log = logging.getLogger(__name__)

# Called with the key file's path; returns the passphrase, or None to skip that key.
PassphraseCallback = Callable[[str], "str | Awaitable[str | None] | None"]


def default_identity_files() -> list[Path]:
    """jobtunnel's own key, then OpenSSH's usual names, in the order they are offered."""
    ssh_dir = Path("~", ".ssh").expanduser()
    names = ("id_ed25519", "id_ecdsa", "id_rsa")
    own = paths.key_file()
    # `jobtunnel keys generate --type rsa` / `keys import` put other kinds beside own.
    return [own, *(ssh_dir / n for n in names), *(own.with_name(n) for n in names[1:])]


def _ssh_config(user: str, host: str, port: int) -> Any:
    """~/.ssh/config as it applies to this endpoint (asyncssh's parse), or None."""
    config = Path("~", ".ssh", "config").expanduser()
    if not os.access(config, os.R_OK):
        return None
    try:
        # client_keys=None: parse the config only, load no keys.
        return asyncssh.SSHClientConnectionOptions(
            config=[str(config)], host=host, port=port, username=user, client_keys=None
        ).config
    except (OSError, ValueError) as exc:
        log.warning("cannot read %s: %s", config, exc)
        return None


def ssh_config_identity_files(user: str, host: str, port: int) -> list[Path]:
    """``IdentityFile`` entries ~/.ssh/config gives for this endpoint (empty if none)."""
    config = _ssh_config(user, host, port)
    found = config.get("IdentityFile", ()) if config is not None else ()
    if not isinstance(found, list | tuple):
        return []
    return [Path(str(f)).expanduser() for f in found]


def agent_path(user: str, host: str, port: int, use_ssh_config: bool) -> str | None:
    """The agent socket to use: ``IdentityAgent`` from ~/.ssh/config when it names one
    for this endpoint (``none`` turns the agent off), else ``SSH_AUTH_SOCK``."""
    env = os.environ.get("SSH_AUTH_SOCK") or None
    config = _ssh_config(user, host, port) if use_ssh_config else None
    if config is None:
        return env
    # asyncssh stores IdentityAgent none as None; a missing key is told apart by default.
    found = config.get("IdentityAgent", "")
    if found is None:
        return None
    if not isinstance(found, str) or not found:
        return env
    if found == "SSH_AUTH_SOCK":
        return env
    if found.startswith("$"):
        return os.environ.get(found.lstrip("$").strip("{}")) or None
    return str(Path(found).expanduser())


class KeyLoader:
    """Loads the private keys to offer, asking for passphrases at most once per file."""

    def __init__(
        self,
        identity_files: Sequence[str | os.PathLike[str]] = (),
        passphrase: PassphraseCallback | None = None,
    ) -> None:
        self._configured = [Path(f).expanduser() for f in identity_files]
        self._passphrase = passphrase
        self._passphrases: dict[Path, str] = {}

    def candidates(self, user: str, host: str, port: int, use_ssh_config: bool) -> list[Path]:
        if self._configured:
            return list(self._configured)
        own, *rest = default_identity_files()
        from_config = ssh_config_identity_files(user, host, port) if use_ssh_config else []
        ordered: list[Path] = []
        for path in (own, *from_config, *rest):
            if path not in ordered:
                ordered.append(path)
        return ordered

    async def load(
        self, user: str, host: str, port: int, use_ssh_config: bool = True
    ) -> list[asyncssh.SSHKey]:
        """Every candidate key that exists and can be decrypted; others are skipped with
        a warning (a configured file that is missing is worth a warning too)."""
        keys: list[asyncssh.SSHKey] = []
        for path in self.candidates(user, host, port, use_ssh_config):
            if not path.exists():
                if self._configured:
                    log.warning("identity file %s does not exist", path)
                continue
            key = await self._load_one(path)
            if key is not None:
                keys.append(key)
        return keys

    async def _load_one(self, path: Path) -> asyncssh.SSHKey | None:
        problem = permission_problem(path)
        if problem:
            log.warning("%s", problem)
            return None
        try:
            return asyncssh.read_private_key(path, self._passphrases.get(path))
        except asyncssh.KeyImportError as exc:
            if "Passphrase must be specified" not in str(exc):
                log.warning("cannot read key %s: %s", path, exc)
                return None
        except (asyncssh.KeyEncryptionError, OSError) as exc:
            self._passphrases.pop(path, None)
            log.warning("cannot read key %s: %s", path, exc)
            return None
        if self._passphrase is None:
            log.info("key %s is encrypted and no passphrase source is set; skipped", path)
            return None
        answer = self._passphrase(str(path))
        phrase = await answer if inspect.isawaitable(answer) else answer
        if not phrase:
            log.info("no passphrase given for key %s; skipped", path)
            return None
        try:
            key = asyncssh.read_private_key(path, phrase)
        except (asyncssh.KeyImportError, asyncssh.KeyEncryptionError, OSError) as exc:
            log.warning("cannot decrypt key %s: %s", path, exc)
            return None
        self._passphrases[path] = phrase
        return key


def auth_options(keys: Sequence[asyncssh.SSHKey], agent: str | None) -> dict[str, Any]:
    """asyncssh connect arguments for authentication; ``agent`` from :func:`agent_path`."""
    return {
        "client_keys": list(keys),
        "password_auth": False,
        "kbdint_auth": False,
        "gss_auth": False,
        "gss_kex": False,
        "host_based_auth": False,
        # An explicit list of keys would make asyncssh raise on the first encrypted one.
        "ignore_encrypted": True,
        # asyncssh reads ~/.ssh/config when config is left unset; [] reads nothing.
        "config": [],
        "agent_path": agent,
        "agent_forwarding": False,
    }
