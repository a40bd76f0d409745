"""Where the Rescale API key comes from, and where ``jobtunnel rescale login`` keeps it.

In this order: the profile the config names in the Rescale CLI's own
``~/.config/rescale/apiconfig`` (INI: a section per profile, ``apikey`` and
``apibaseurl``; read at each start, never copied); the key ``rescale login`` stored in
the OS keyring; ``RESCALE_API_KEY`` in the environment. The key is never written to the
config, the state file or a log: :class:`Credentials` hides it from ``repr``.

What ``login`` remembers besides the key (the platform's address, which is not a
secret) is in ``rescale-login.json`` next to the state file.
"""

from __future__ import annotations

import configparser
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import files, paths
from ..config import RescaleConfig
from ..core.rescale import base_url, base_url_problem
from .passphrase import KeyringUnavailable, _keyring

__all__ = [
    "ENV_KEY",
    "KEYRING_SERVICE",
    "Credentials",
    "CredentialsError",
    "apiconfig_file",
    "find",
    "forget_login",
    "login_file",
    "read_apiconfig",
    "store_login",
]

log = logging.getLogger(__name__)

ENV_KEY = "RESCALE_API_KEY"
KEYRING_SERVICE = "jobtunnel-rescale"


class CredentialsError(RuntimeError):
    """A key source that was asked for cannot give a key; the message says why."""


@dataclass(frozen=True)
class Credentials:
    """An API key and the platform it belongs to; ``origin`` says where it was found."""

    key: str = field(repr=False)
    base: str
    origin: str

    def __str__(self) -> str:
        return f"{self.base} (key from {self.origin})"


def apiconfig_file() -> Path:
    """The Rescale CLI's credentials file."""
    return Path.home() / ".config" / "rescale" / "apiconfig"


def login_file() -> Path:
    return paths.state_dir() / "rescale-login.json"


def read_apiconfig(profile: str, path: Path | None = None) -> Credentials:
    """The key and address of ``profile`` in the Rescale CLI's apiconfig."""
    path = path or apiconfig_file()
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with path.open(encoding="utf-8") as f:
            parser.read_file(f)
    except FileNotFoundError:
        raise CredentialsError(f"{path}: no such file (the Rescale CLI writes it)") from None
    except (OSError, UnicodeDecodeError, configparser.Error) as exc:
        raise CredentialsError(f"{path}: cannot read it: {type(exc).__name__}") from None
    if not parser.has_section(profile):
        found = ", ".join(parser.sections()) or "none"
        raise CredentialsError(f"{path}: no profile [{profile}] (profiles there: {found})")
    section = parser[profile]
    key = section.get("apikey", "").strip()
    if not key:
        raise CredentialsError(f"{path}: [{profile}] has no apikey")
    url = section.get("apibaseurl", "").strip() or base_url()
    why = base_url_problem(url)
    if why is not None:
        raise CredentialsError(f"{path}: [{profile}] apibaseurl {url!r}: {why}")
    return Credentials(key, url.rstrip("/"), f"{path} [{profile}]")


def _load_login() -> dict[str, Any] | None:
    try:
        data = json.loads(login_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("base"), str) else None


def store_login(key: str, base: str) -> str:
    """Keep ``key`` in the OS keyring for ``base``; returns the keyring backend's name."""
    keyring = _keyring()
    try:
        keyring.set_password(KEYRING_SERVICE, base, key)
    except keyring.errors.KeyringError as exc:
        raise KeyringUnavailable(
            f"the OS keyring refused to store the key ({type(exc).__name__}); "
            f"set {ENV_KEY} in the daemon's environment or use the Rescale CLI's "
            "apiconfig (rescale.profile) instead"
        ) from None
    path = login_file()
    files.private_dir(path.parent)
    files.replace_atomically(path, json.dumps({"base": base}).encode())
    return str(keyring.get_keyring().name)


def forget_login() -> str | None:
    """Remove the stored key; returns the address it was for (None: none was stored)."""
    login = _load_login()
    if login is None:
        return None
    try:
        keyring = _keyring()
        keyring.delete_password(KEYRING_SERVICE, login["base"])
    except KeyringUnavailable:
        pass
    except Exception as exc:  # keyring backends raise their own PasswordDeleteError kinds
        log.info("keyring: nothing to delete (%s)", type(exc).__name__)
    login_file().unlink(missing_ok=True)
    return str(login["base"])


def _from_keyring() -> Credentials | None:
    login = _load_login()
    if login is None:
        return None
    try:
        keyring = _keyring()
        key = keyring.get_password(KEYRING_SERVICE, login["base"])
    except KeyringUnavailable as exc:
        raise CredentialsError(f"`jobtunnel rescale login` stored a key, but {exc}") from None
    except Exception as exc:
        raise CredentialsError(f"the OS keyring is not readable ({type(exc).__name__})") from None
    if not key:
        return None
    return Credentials(str(key), str(login["base"]), "the OS keyring (jobtunnel rescale login)")


def find(config: RescaleConfig, environ: dict[str, str] | None = None) -> Credentials | None:
    """The key to use, by the order above; None when there is none (the API is off).
    Raises CredentialsError when a source the config names cannot give one."""
    if not config.enabled:
        return None
    if config.profile:
        return read_apiconfig(config.profile)
    found = _from_keyring()
    if found is not None:
        return found
    env = os.environ if environ is None else environ
    key = env.get(ENV_KEY, "").strip()
    if key:
        try:
            base = base_url(config.platform, config.url)
        except ValueError as exc:
            raise CredentialsError(str(exc)) from None
        return Credentials(key, base, f"the environment ({ENV_KEY})")
    return None
