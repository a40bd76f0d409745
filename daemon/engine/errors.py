"""Why a connection attempt failed, in the categories of :class:`~..core.policy.ErrorKind`."""

from __future__ import annotations

import errno
import socket

import asyncssh

from ..core.policy import ErrorKind

__all__ = ["ChannelRefused", "HostKeyChanged", "classify"]


class HostKeyChanged(Exception):
    """The server's key differs from the one pinned for this endpoint."""

    def __init__(self, pinned: str, offered: str) -> None:
        super().__init__(f"pinned {pinned}, server now offers {offered}")
        self.pinned = pinned
        self.offered = offered


class ChannelRefused(Exception):
    """The cluster side refused the direct-tcpip channel (nothing listening there)."""

    def __init__(self, reason: str, code: int) -> None:
        super().__init__(reason)
        self.code = code


def classify(exc: BaseException) -> tuple[ErrorKind, str]:
    """Map a connect failure to a kind the user can act on, plus short detail."""
    if isinstance(exc, HostKeyChanged):
        return ErrorKind.HOST_KEY_CHANGED, str(exc)
    if isinstance(exc, asyncssh.PermissionDenied):
        return ErrorKind.AUTH, exc.reason
    if isinstance(exc, ConnectionRefusedError):
        return ErrorKind.REFUSED, ""
    if isinstance(exc, TimeoutError):
        return ErrorKind.TIMEOUT, ""
    if isinstance(exc, socket.gaierror):
        return ErrorKind.UNREACHABLE, f"name lookup failed: {exc.strerror}"
    if isinstance(exc, OSError) and exc.errno in (
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.EADDRNOTAVAIL,
    ):
        return ErrorKind.UNREACHABLE, exc.strerror or ""
    if isinstance(exc, asyncssh.ConnectionLost):
        return ErrorKind.LOST, exc.reason
    if isinstance(exc, asyncssh.DisconnectError):
        return ErrorKind.OTHER, exc.reason
    return ErrorKind.OTHER, f"{type(exc).__name__}: {exc}"
