"""The control API's wire: where it listens, how messages are framed, and its limits.

Transports: on POSIX a Unix socket (0600, in a 0700 directory) whose peers must have the
daemon's uid; on Windows loopback TCP, where the first message must carry a random token
read from a user-only file. The ``tcp`` transport can be chosen on POSIX too (tests do).

One JSON object per line (UTF-8, ``\\n``-terminated, at most :data:`MAX_MESSAGE` bytes
from a client)::

    -> {"v": 1, "id": 7, "cmd": "status", "args": {}}
    <- {"v": 1, "id": 7, "ok": true, "result": ...}
    <- {"v": 1, "id": 7, "ok": false, "error": "words for a person"}
    <- {"v": 1, "event": "status", "data": {...}}        (after "subscribe" only)

Built-in commands: ``auth`` (``{"token": ...}``; must come first over TCP), ``hello``
(server and version), ``subscribe`` (start receiving events; when the daemon has a
``subscribe`` handler, its result, e.g. a status snapshot, is the reply), ``unsubscribe``.
An error about the connection itself (refused peer, oversized message) has ``"id": null``
and is followed by the server closing the connection. Command names are
:class:`~jobtunnel.daemon.api.schema.Command`; the status payload is
:class:`~jobtunnel.daemon.api.schema.StatusSnapshot`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from .. import paths

__all__ = [
    "AUTH_TIMEOUT",
    "CLIENT_LIMIT",
    "CONNECT_TIMEOUT",
    "FLUSH_TIMEOUT",
    "MAX_MESSAGE",
    "PROTOCOL_VERSION",
    "ControlError",
    "TransportKind",
    "default_path",
    "default_transport",
    "encode",
    "error_line",
    "transport_kind",
]

PROTOCOL_VERSION = 1
MAX_MESSAGE = 1 << 20
# Replies such as a full status snapshot may be larger than what a client may send.
CLIENT_LIMIT = 64 << 20
AUTH_TIMEOUT = 10.0
CONNECT_TIMEOUT = 5.0
# How long a closing connection gets to flush what is queued for it.
FLUSH_TIMEOUT = 2.0

TransportKind = Literal["unix", "tcp"]


class ControlError(Exception):
    """A request failed; the message is the daemon's words for a person.

    Handlers may raise it too: its message becomes the error reply, with no traceback
    logged, as it is an expected refusal rather than a bug.
    """


def default_transport(os_name: str = os.name) -> TransportKind:
    """Windows (``nt``) has no Unix sockets for asyncio: TCP on loopback with a token file."""
    return "tcp" if os_name == "nt" else "unix"


def transport_kind(name: str | None) -> TransportKind:
    """``"unix"`` or ``"tcp"``; None or ``"auto"`` pick the platform's (the config's words)."""
    if name is None or name == "auto":
        return default_transport()
    if name == "unix":
        return "unix"
    if name == "tcp":
        return "tcp"
    raise ValueError(f'control transport must be "auto", "unix" or "tcp", not {name!r}')


def default_path(transport: TransportKind) -> Path:
    """The socket (unix) or the port-and-token file (tcp) in the runtime dir."""
    return paths.runtime_dir() / ("control.sock" if transport == "unix" else "control.json")


def encode(msg: Mapping[str, Any]) -> bytes:
    """One message as a line."""
    return json.dumps(msg, separators=(",", ":")).encode() + b"\n"


def error_line(rid: int | None, words: str) -> bytes:
    """An error reply (``rid`` None: about the connection itself)."""
    return encode({"v": PROTOCOL_VERSION, "id": rid, "ok": False, "error": words})
