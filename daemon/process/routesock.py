"""The kernel's own change notices, read from a routing socket in the event loop: an
rtnetlink socket on Linux (link, address and route groups), ``PF_ROUTE`` on macOS.

Only "something changed, of this kind" is taken from a message (:mod:`..core.netcheck`
parses it); what the change means for a link is asked of the kernel afresh then.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import sys
from collections.abc import Callable

from ..core.netcheck import LinkFlags, netlink_changes, route_socket_changes

__all__ = ["RouteSocket"]

log = logging.getLogger(__name__)

# linux/rtnetlink.h multicast groups.
_RTMGRP_LINK = 0x1
_RTMGRP_IPV4_IFADDR = 0x10
_RTMGRP_IPV4_ROUTE = 0x40
_RTMGRP_IPV6_IFADDR = 0x100
_RTMGRP_IPV6_ROUTE = 0x400
_GROUPS = (
    _RTMGRP_LINK | _RTMGRP_IPV4_IFADDR | _RTMGRP_IPV4_ROUTE | _RTMGRP_IPV6_IFADDR
) | _RTMGRP_IPV6_ROUTE
# The socket module names these only on the platforms that have them (and typeshed
# only there): the numbers are the kernels' own.
_AF_NETLINK, _NETLINK_ROUTE = 16, 0
_AF_ROUTE_DARWIN = 17  # PF_ROUTE
# A burst larger than this is read on the next wake-up of the loop.
_READS_PER_WAKE = 64


class RouteSocket:
    """Calls ``notice(kinds)`` with the change kinds (``link``, ``address``, ``route``)
    of each batch of messages; a lost batch (the kernel's buffer overran) is ``["lost"]``.
    ``platform`` and ``opener`` are injected by tests."""

    name = "routing socket"

    def __init__(
        self,
        platform: str = sys.platform,
        opener: Callable[[], socket.socket] | None = None,
    ) -> None:
        self._platform = platform
        self._opener = opener or self._open
        self._sock: socket.socket | None = None
        self._links = LinkFlags()

    def _open(self) -> socket.socket:
        if self._platform.startswith("linux"):
            family = getattr(socket, "AF_NETLINK", _AF_NETLINK)
            sock = socket.socket(family, socket.SOCK_RAW, _NETLINK_ROUTE)
            sock.bind((0, _GROUPS))
        elif self._platform == "darwin":
            family = getattr(socket, "AF_ROUTE", _AF_ROUTE_DARWIN)
            sock = socket.socket(family, socket.SOCK_RAW, 0)
        else:
            raise OSError(errno.EAFNOSUPPORT, f"no routing socket on {self._platform}")
        return sock

    def start(self, notice: Callable[[list[str]], None]) -> None:
        """Open the socket and read it in the running loop; raises OSError if the
        platform has none or refuses it."""
        sock = self._opener()
        sock.setblocking(False)
        self._sock = sock
        parse = self._parser()

        def readable() -> None:
            kinds: list[str] = []
            for _ in range(_READS_PER_WAKE):
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    break
                except OSError as exc:
                    if exc.errno != errno.ENOBUFS:
                        log.warning("network watch: %s: %s", self.name, exc)
                    kinds.append("lost")  # messages were dropped: something changed
                    break
                kinds += parse(data)
            if kinds:
                notice(kinds)

        asyncio.get_running_loop().add_reader(sock.fileno(), readable)

    def _parser(self) -> Callable[[bytes], list[str]]:
        if self._platform.startswith("linux"):
            return lambda data: netlink_changes(data, self._links)
        return route_socket_changes

    def stop(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            asyncio.get_running_loop().remove_reader(sock.fileno())
            sock.close()
