"""The Unix-socket transport's OS calls, the one place that names them.

Windows has no ``AF_UNIX`` streams in asyncio and no user ids: there the ``unix``
transport is refused with a message naming ``daemon.control = "tcp"`` (what ``auto``
picks there), instead of an AttributeError deep inside asyncio.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable

from .wire import ControlError

__all__ = ["UNSUPPORTED", "current_uid", "open_connection", "start_server"]

UNSUPPORTED = (
    'the "unix" control transport does not exist on Windows; '
    'set daemon.control = "tcp" (or "auto") in the config'
)

ClientCallback = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def start_server(callback: ClientCallback, path: str, limit: int) -> asyncio.Server:
    if sys.platform == "win32":
        raise ControlError(UNSUPPORTED)
    else:
        return await asyncio.start_unix_server(callback, path=path, limit=limit)


async def open_connection(
    path: str, limit: int = 2**16
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    if sys.platform == "win32":
        raise ControlError(UNSUPPORTED)
    else:
        return await asyncio.open_unix_connection(path, limit=limit)


def current_uid() -> int | None:
    """The daemon's user id; None where the OS has none (Windows)."""
    if sys.platform == "win32":
        return None
    else:
        return os.getuid()
