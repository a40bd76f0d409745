"""systemd's notify protocol (``Type=notify``, ``WatchdogSec=``) without libsystemd.

Messages are datagrams to ``$NOTIFY_SOCKET``; outside systemd every call is a no-op, and
so on Windows and macOS whatever the environment says (no systemd there, nor the socket
flags this needs).
"""

from __future__ import annotations

import logging
import os
import socket
import sys

__all__ = ["Notifier"]

log = logging.getLogger(__name__)


class Notifier:
    """Sends READY, STATUS, STOPPING and WATCHDOG messages when systemd asked for them."""

    def __init__(
        self, environ: dict[str, str] | None = None, *, platform: str = sys.platform
    ) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "") if platform == "linux" else ""
        # An abstract socket is spelled with a leading '@'; the kernel wants a NUL.
        self._address = "\0" + address[1:] if address.startswith("@") else address
        usec = env.get("WATCHDOG_USEC", "") if platform == "linux" else ""
        pid = env.get("WATCHDOG_PID", "")
        mine = not pid or pid == str(os.getpid())
        self.watchdog_interval = int(usec) / 1e6 / 2 if usec.isdigit() and mine else None
        self._socket: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def send(self, message: str) -> None:
        if not self._address:
            return
        try:
            if self._socket is None:
                self._socket = _datagram_socket()
            self._socket.sendto(message.encode(), self._address)
        except OSError as exc:
            # Losing a status line must never take the daemon down.
            log.warning("systemd notify failed: %s", exc)

    def ready(self, status: str) -> None:
        self.send(f"READY=1\nSTATUS={status}")

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def stopping(self) -> None:
        self.send("STOPPING=1")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _datagram_socket() -> socket.socket:
    if sys.platform == "linux":
        return socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    else:
        raise OSError("systemd's notify socket exists only on Linux")
