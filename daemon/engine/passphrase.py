"""Key passphrases: the OS keyring (when the user opted in) and the terminal.

ssh-agent needs nothing here: asyncssh asks the agent itself. A passphrase is never
written to the config, the state file or a log; in the keyring it is stored under the
service name ``jobtunnel`` with the key file's absolute path as the user name.

The ``keyring`` package is optional (``pip install 'jobtunnel[keyring]'``); without it
:func:`recall` finds nothing and :func:`remember` says how to get it.
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import os
import sys
from pathlib import Path
from types import ModuleType

__all__ = [
    "SERVICE",
    "KeyringUnavailable",
    "ask",
    "ask_new",
    "forget",
    "keyring_source",
    "recall",
    "remember",
]

log = logging.getLogger(__name__)

SERVICE = "jobtunnel"
INSTALL_HINT = "pip install 'jobtunnel[keyring]' (or your system's python3-keyring)"


class KeyringUnavailable(RuntimeError):
    """No usable OS keyring: the package is missing or it found no backend."""


def _account(path: str | os.PathLike[str]) -> str:
    return str(Path(path).expanduser().absolute())


def _keyring() -> ModuleType:
    try:
        import keyring
        import keyring.errors
    except ImportError:
        raise KeyringUnavailable(
            f"the 'keyring' package is not installed: {INSTALL_HINT}; "
            "or load the key into ssh-agent (ssh-add) instead"
        ) from None
    return keyring


def remember(path: str | os.PathLike[str], phrase: str) -> str:
    """Store the passphrase for the key at ``path``; returns the keyring backend's name."""
    keyring = _keyring()
    try:
        keyring.set_password(SERVICE, _account(path), phrase)
    except keyring.errors.KeyringError as exc:
        raise KeyringUnavailable(
            f"the OS keyring refused to store it ({type(exc).__name__}: {exc}); "
            "load the key into ssh-agent (ssh-add) instead"
        ) from None
    return str(keyring.get_keyring().name)


def recall(path: str | os.PathLike[str]) -> str | None:
    """The remembered passphrase, or None (no keyring, nothing stored, keyring error)."""
    try:
        keyring = _keyring()
    except KeyringUnavailable:
        return None
    try:
        found = keyring.get_password(SERVICE, _account(path))
    except keyring.errors.KeyringError as exc:
        log.info("OS keyring not readable for %s: %s", path, type(exc).__name__)
        return None
    return str(found) if found is not None else None


def forget(path: str | os.PathLike[str]) -> bool:
    """Remove a remembered passphrase; False when none was stored."""
    keyring = _keyring()
    try:
        keyring.delete_password(SERVICE, _account(path))
    except keyring.errors.PasswordDeleteError:
        return False
    except keyring.errors.KeyringError as exc:
        raise KeyringUnavailable(f"the OS keyring failed: {exc}") from None
    return True


async def keyring_source(path: str) -> str | None:
    """A passphrase callback for the daemon: the keyring only, off the event loop (an
    unlocked-keyring prompt may block)."""
    return await asyncio.to_thread(recall, path)


def ask(prompt: str) -> str | None:
    """Read a passphrase on the terminal without echo; None without a terminal."""
    if not sys.stdin.isatty():
        return None
    try:
        return getpass.getpass(prompt)
    except EOFError:
        return None


def ask_new(what: str = "new key") -> str:
    """Ask twice for a new passphrase; ValueError when they differ or there is no terminal."""
    first = ask(f"Passphrase for the {what}: ")
    if first is None:
        raise ValueError("a passphrase can only be typed on a terminal")
    if ask("Same passphrase again: ") != first:
        raise ValueError("the two passphrases differ")
    return first
