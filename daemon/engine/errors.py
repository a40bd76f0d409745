"""Why a connection attempt failed, in the categories of :class:`~..core.policy.ErrorKind`."""

from __future__ import annotations

import errno
import socket

import asyncssh

from ..core.policy import ErrorKind

__all__ = ["AddressRefused", "BastionFailed", "ChannelRefused", "HostKeyChanged", "classify"]


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


class AddressRefused(Exception):
    """A cluster name resolves to an address jobtunnel will not connect to by itself."""

    def __init__(self, host: str, address: str, problem: str) -> None:
        said = f"{host} is" if host == address else f"{host} resolves to {address},"
        super().__init__(f"{said} {problem}")
        self.host = host
        self.address = address


class BastionFailed(Exception):
    """The ``ssh.proxy_jump`` host could not be reached or logged in to."""

    def __init__(self, bastion: str, cause: BaseException) -> None:
        super().__init__(f"bastion {bastion}: {cause}")
        self.bastion = bastion
        self.cause = cause


# Short words for kinds whose detail is empty, when they are told about the bastion.
_BASTION_WORDS = {
    ErrorKind.REFUSED: "connection refused",
    ErrorKind.TIMEOUT: "connection timed out",
    ErrorKind.LOST: "connection lost",
}


def classify(exc: BaseException) -> tuple[ErrorKind, str]:
    """Map a connect failure to a kind the user can act on, plus short detail."""
    if isinstance(exc, AddressRefused):
        # Unreachable, so retried under the normal backoff: DNS may change (a job's name
        # is published before its address is), and each try resolves again and checks
        # again, so a retry never connects to what was refused.
        return ErrorKind.UNREACHABLE, str(exc)
    if isinstance(exc, BastionFailed):
        kind, detail = classify(exc.cause)
        detail = detail or _BASTION_WORDS.get(kind, kind.value)
        # The bastion's failures are told as such; the cluster-side hints (job not
        # started, CIDR restriction) would point the user at the wrong host. Auth and
        # host-key failures keep their kind: they need the user, and a changed bastion
        # key must not be retried.
        if kind is ErrorKind.HOST_KEY_CHANGED:
            # `jobtunnel trust` replaces a cluster's pin, never the bastion's.
            detail += "; to accept it, remove the bastion's line from jobtunnel's known_hosts"
        elif kind is not ErrorKind.AUTH:
            kind = ErrorKind.UNREACHABLE
        return kind, f"bastion {exc.bastion}: {detail}"
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
    if isinstance(exc, asyncssh.ChannelOpenError):
        # Only a connection through the proxy_jump host opens a channel to connect.
        return ErrorKind.UNREACHABLE, f"the bastion could not connect: {exc.reason}"
    if isinstance(exc, asyncssh.ConnectionLost):
        return ErrorKind.LOST, exc.reason
    if isinstance(exc, asyncssh.DisconnectError):
        return ErrorKind.OTHER, exc.reason
    return ErrorKind.OTHER, f"{type(exc).__name__}: {exc}"
