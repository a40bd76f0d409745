"""Client authentication: which private keys to offer, the agent, and ~/.ssh/config.

Keys come from the configured list (``ssh.identity_files``), else jobtunnel's own key,
then an ``IdentityFile`` that ~/.ssh/config names for the host, then OpenSSH's default
key names. The agent (``SSH_AUTH_SOCK``, or ``IdentityAgent`` from the config) is used
by asyncssh as well. Password and keyboard-interactive authentication are always off:
the daemon runs unattended and must never prompt.

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


def ssh_config_identity_files(user: str, host: str, port: int) -> list[Path]:
    """``IdentityFile`` entries ~/.ssh/config gives for this endpoint (empty if none)."""
    config = Path("~", ".ssh", "config").expanduser()
    if not os.access(config, os.R_OK):
        return []
    try:
        # client_keys=None: parse the config only, load no keys.
        opts = asyncssh.SSHClientConnectionOptions(
            config=[str(config)], host=host, port=port, username=user, client_keys=None
        )
        found = opts.config.get("IdentityFile", ())
    except (OSError, ValueError) as exc:
        log.warning("cannot read %s: %s", config, exc)
        return []
    if not isinstance(found, list | tuple):
        return []
    return [Path(str(f)).expanduser() for f in found]


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


def auth_options(keys: Sequence[asyncssh.SSHKey], use_ssh_config: bool) -> dict[str, Any]:
    """asyncssh connect arguments for authentication and ~/.ssh/config handling."""
    options: dict[str, Any] = {
        "client_keys": list(keys),
        "password_auth": False,
        "kbdint_auth": False,
        "gss_auth": False,
        "gss_kex": False,
        "host_based_auth": False,
        # An explicit list of keys would make asyncssh raise on the first encrypted one.
        "ignore_encrypted": True,
    }
    if not use_ssh_config:
        # asyncssh reads ~/.ssh/config when config is left unset; [] reads nothing.
        options["config"] = []
        # Without a config, fall back to the environment's agent as OpenSSH does.
        options["agent_path"] = os.environ.get("SSH_AUTH_SOCK") or None
    return options
