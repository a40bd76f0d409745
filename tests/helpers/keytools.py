"""Helpers for the key tests: ssh-keygen's view of a key, and an in-memory keyring."""

from __future__ import annotations

import subprocess
from pathlib import Path

from .deps import require_tool


def public_of(private: Path, passphrase: str = "") -> str:
    """``ssh-keygen -y``: "type base64" of an OpenSSH private key (comment dropped)."""
    keygen = require_tool("ssh-keygen", "openssh-client")
    out = subprocess.run(
        [keygen, "-y", "-P", passphrase, "-f", str(private)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    return " ".join(out.split()[:2])


def same_key(line_a: str, line_b: str) -> bool:
    return line_a.split()[:2] == line_b.split()[:2]


def memory_keyring() -> object:
    import keyring.backend
    import keyring.errors

    class _Memory(keyring.backend.KeyringBackend):
        priority = 1  # type: ignore[assignment]

        def __init__(self) -> None:
            super().__init__()
            self.store: dict[tuple[str, str], str] = {}

        def get_password(self, service: str, username: str) -> str | None:
            return self.store.get((service, username))

        def set_password(self, service: str, username: str, password: str) -> None:
            self.store[(service, username)] = password

        def delete_password(self, service: str, username: str) -> None:
            if self.store.pop((service, username), None) is None:
                raise keyring.errors.PasswordDeleteError("not stored")

    return _Memory()
