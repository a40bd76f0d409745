"""Host keys pinned on first use, one pin per endpoint (user, host, port).

The file is OpenSSH known_hosts format, so ``ssh -o UserKnownHostsFile=...`` can read it:
``host`` for port 22, ``[host]:port`` otherwise, then the key. OpenSSH keys entries by
host and port only, but Rescale reuses addresses for new jobs with new host keys, so the
pin must belong to the job: the job's username is written in the line's comment field as
``jobtunnel-user=<user>``. OpenSSH ignores comments; several jobs seen at one address
simply give several lines.

Writes are atomic (temporary file, fsync, rename) and the file is mode 0600. Every write
re-reads the file first, so two processes pinning different endpoints do not lose each
other's lines (a simultaneous write can still lose one; the next connection re-pins).
"""

from __future__ import annotations

import enum
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from ..core.address import hostport
from ..files import private_dir, replace_atomically

__all__ = ["HostKeyStore", "Pin", "Verdict", "fingerprint"]

log = logging.getLogger(__name__)

USER_MARK = "jobtunnel-user="


def fingerprint(key: asyncssh.SSHKey) -> str:
    """OpenSSH style ``SHA256:...`` fingerprint."""
    return key.get_fingerprint("sha256")


def _host_field(host: str, port: int) -> str:
    """OpenSSH's known_hosts host field: bare for port 22, else ``[host]:port``."""
    return host if port == 22 else f"[{host}]:{port}"


class Verdict(enum.Enum):
    MATCH = "match"
    NEW = "new"
    CHANGED = "changed"


@dataclass(frozen=True)
class Pin:
    user: str
    host: str
    port: int
    key: asyncssh.SSHKey

    def key_text(self) -> str:
        """``type base64``, the key as known_hosts writes it."""
        data = self.key.export_public_key("openssh").decode("ascii").split()
        return f"{data[0]} {data[1]}"

    def line(self) -> str:
        return f"{_host_field(self.host, self.port)} {self.key_text()} {USER_MARK}{self.user}"


def _parse_line(line: str) -> Pin | None:
    parts = line.split()
    if len(parts) < 3 or line.lstrip().startswith(("#", "@")):
        return None
    users = [p[len(USER_MARK) :] for p in parts[3:] if p.startswith(USER_MARK)]
    if not users:
        return None  # not ours (hand-added lines are kept but never match a user)
    field = parts[0]
    if field.startswith("["):
        host, _, port_text = field[1:].partition("]:")
        if not port_text.isdigit():
            return None
        port = int(port_text)
    else:
        host, port = field, 22
    try:
        key = asyncssh.import_public_key(f"{parts[1]} {parts[2]}")
    except (asyncssh.KeyImportError, ValueError):
        return None
    return Pin(users[0], host, port, key)


class HostKeyStore:
    """Trust-on-first-use pins in a known_hosts-format file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def _read(self) -> list[str]:
        try:
            return self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []

    def pins(self) -> list[Pin]:
        """Every pin in the file (lines that are not jobtunnel's are left out)."""
        return [pin for line in self._read() if (pin := _parse_line(line)) is not None]

    def lookup(self, user: str, host: str, port: int) -> asyncssh.SSHKey | None:
        for line in self._read():
            pin = _parse_line(line)
            if pin and (pin.user, pin.host, pin.port) == (user, host, port):
                return pin.key
        return None

    def check(
        self, user: str, host: str, port: int, key: asyncssh.SSHKey
    ) -> tuple[Verdict, asyncssh.SSHKey | None]:
        """Compare ``key`` with the pin; returns the verdict and the pinned key."""
        pinned = self.lookup(user, host, port)
        if pinned is None:
            return Verdict.NEW, None
        if pinned.public_data == key.public_data:
            return Verdict.MATCH, pinned
        return Verdict.CHANGED, pinned

    def pin(self, user: str, host: str, port: int, key: asyncssh.SSHKey) -> None:
        """Pin ``key`` for the endpoint, replacing an earlier pin for it."""
        _check_user(user)
        keep = [line for line in self._read() if not self._is_endpoint(line, user, host, port)]
        keep.append(Pin(user, host, port, key).line())
        self._write(keep)
        log.info("pinned host key %s for %s@%s", fingerprint(key), user, hostport(host, port))

    def forget(self, user: str, host: str, port: int) -> bool:
        """Drop the endpoint's pin (the user accepted a new host key). True if one existed."""
        lines = self._read()
        keep = [line for line in lines if not self._is_endpoint(line, user, host, port)]
        if len(keep) == len(lines):
            return False
        self._write(keep)
        log.info("forgot host key for %s@%s", user, hostport(host, port))
        return True

    @staticmethod
    def _is_endpoint(line: str, user: str, host: str, port: int) -> bool:
        pin = _parse_line(line)
        return pin is not None and (pin.user, pin.host, pin.port) == (user, host, port)

    def _write(self, lines: list[str]) -> None:
        private_dir(self.path.parent)
        replace_atomically(self.path, "".join(line + "\n" for line in lines))


def _check_user(user: str) -> None:
    if not user or any(c.isspace() for c in user):
        raise ValueError(f"username {user!r} is empty or has spaces")
