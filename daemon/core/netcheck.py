"""Network changes and wakes, sans-I/O: which kernel messages mean the network changed,
how a burst of them becomes one check, and what to do with each link then.

Nothing here opens a socket or reads a clock. The readers (:mod:`..process.netwatch`)
pass the bytes they received and the current time; the tunnel passes what the kernel
now says about its link's addresses (:func:`link_verdict`).
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

__all__ = [
    "NETWORK_CHANGED",
    "WOKE",
    "Debounce",
    "LinkCheck",
    "LinkFlags",
    "Path",
    "Verdict",
    "link_verdict",
    "netlink_changes",
    "poll_changed",
    "route_socket_changes",
]

# Why links were checked, as status shows it.
NETWORK_CHANGED = "network changed"
WOKE = "woke from sleep"

# rtnetlink message types (linux/rtnetlink.h).
_RTM_NEWLINK, _RTM_DELLINK = 16, 17
_RTM_NEWADDR, _RTM_DELADDR = 20, 21
_RTM_NEWROUTE, _RTM_DELROUTE = 24, 25
_NLMSG_HDR = struct.Struct("=IHHII")  # length, type, flags, seq, pid
_IFINFO = struct.Struct("=BxHiII")  # family, type, index, flags, change
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, ..., flags
_RTM_F_CLONED = 0x200
# The interface flags that decide whether a link carries traffic.
IFF_UP, IFF_RUNNING, IFF_LOWER_UP = 0x1, 0x40, 0x10000
_CARRIES = IFF_UP | IFF_RUNNING | IFF_LOWER_UP

# BSD/macOS routing socket (net/route.h): rt_msghdr starts msglen(2), version(1), type(1).
_RT_HDR = struct.Struct("=HBB")
_RTM_BSD = {
    0x1: "route",  # RTM_ADD
    0x2: "route",  # RTM_DELETE
    0x3: "route",  # RTM_CHANGE
    0xC: "address",  # RTM_NEWADDR
    0xD: "address",  # RTM_DELADDR
    0xE: "link",  # RTM_IFINFO
}


@dataclass
class LinkFlags:
    """The last seen flags of each interface: a wireless driver repeats RTM_NEWLINK for
    signal and statistics news, which must not count as a change."""

    flags: dict[int, int] = field(default_factory=dict)

    def changed(self, index: int, flags: int, gone: bool = False) -> bool:
        if gone:
            return self.flags.pop(index, None) is not None
        before = self.flags.get(index)
        self.flags[index] = flags
        return before is None or (before & _CARRIES) != (flags & _CARRIES)


def _netlink_messages(data: bytes) -> Iterator[tuple[int, bytes]]:
    offset = 0
    while offset + _NLMSG_HDR.size <= len(data):
        length, kind, _flags, _seq, _pid = _NLMSG_HDR.unpack_from(data, offset)
        if length < _NLMSG_HDR.size or offset + length > len(data):
            return  # truncated or garbled: the rest of the datagram is not trusted
        yield kind, data[offset + _NLMSG_HDR.size : offset + length]
        offset += (length + 3) & ~3


def netlink_changes(data: bytes, links: LinkFlags) -> list[str]:
    """The changes (``link``, ``address``, ``route``) one rtnetlink datagram reports;
    repeated link news with the same carrier state and cloned routes are not changes."""
    found: list[str] = []
    for kind, body in _netlink_messages(data):
        if kind in (_RTM_NEWLINK, _RTM_DELLINK):
            if len(body) < _IFINFO.size:
                continue
            _family, _type, index, flags, _change = _IFINFO.unpack_from(body)
            if links.changed(index, flags, gone=kind == _RTM_DELLINK):
                found.append("link")
        elif kind in (_RTM_NEWADDR, _RTM_DELADDR):
            found.append("address")
        elif kind in (_RTM_NEWROUTE, _RTM_DELROUTE):
            if len(body) >= _RTMSG.size and _RTMSG.unpack_from(body)[8] & _RTM_F_CLONED:
                continue
            found.append("route")
    return found


def route_socket_changes(data: bytes) -> list[str]:
    """The changes one read of a BSD routing socket (macOS) reports."""
    found: list[str] = []
    offset = 0
    while offset + _RT_HDR.size <= len(data):
        length, _version, kind = _RT_HDR.unpack_from(data, offset)
        if length < _RT_HDR.size:
            break
        if kind in _RTM_BSD:
            found.append(_RTM_BSD[kind])
        offset += length
    return found


def poll_changed(before: object, now: object) -> bool:
    """The polling fallback's test: the fingerprint of interfaces and routes moved."""
    return before is not None and before != now


CLOCK_TICK = 0.002  # the event loop's timer resolution, with room


@dataclass
class Debounce:
    """A burst of change messages (a link coming up brings its link, address and route
    news within milliseconds; a flapping link brings many) becomes one check: due
    ``quiet`` seconds after the last message, and never later than ``longest`` after
    the first. A wake is due at once."""

    quiet: float = 0.2
    longest: float = 1.0
    _first: float | None = None
    _last: float = 0.0
    _reason: str | None = None

    def event(self, now: float, reason: str = NETWORK_CHANGED) -> None:
        if self._first is None:
            self._first = now
        self._last = now
        if self._reason != WOKE:  # a wake says more than a network change
            self._reason = reason

    @property
    def due_at(self) -> float | None:
        if self._first is None:
            return None
        if self._reason == WOKE:
            return self._first
        return min(self._last + self.quiet, self._first + self.longest)

    def fire(self, now: float) -> str | None:
        """The reason to check the links now, or None when nothing is due yet. A timer
        may wake a clock tick early (uvloop's clock counts milliseconds): that is due."""
        due = self.due_at
        if due is None or now < due - CLOCK_TICK:
            return None
        reason, self._reason, self._first = self._reason, None, None
        return reason


class Verdict(enum.Enum):
    DROP = "drop"  # the link cannot work any more: reconnect now
    ASK = "ask"  # ask the server, with a short deadline
    KEEP = "keep"  # no route now: TCP may carry on when it is back


@dataclass(frozen=True)
class Path:
    """What the kernel says now about a link's path; None where it could not tell
    (a link through a bastion has no socket of its own)."""

    local: str | None  # the connection's own address
    local_present: bool | None  # still one of this machine's addresses
    route: bool | None  # a route to the peer exists
    source: str | None = None  # the address that route sends from now


def _same_address(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a.split("%")[0]) == ipaddress.ip_address(b.split("%")[0])
    except ValueError:
        return a == b


def link_verdict(path: Path) -> tuple[Verdict, str]:
    """What to do with one up link after a network change, and why in words.

    A link with no route is kept, idle or not: a TCP connection outlives a short
    outage as OpenSSH's does, the next change (the route back) asks it, and the
    keepalive ends it if the outage is long. One whose address is gone, or whose
    route now leaves from another address (a VPN came up, another interface took
    over), cannot carry on: it is replaced at once."""
    if path.local_present is False:
        return Verdict.DROP, f"this machine no longer has the address {path.local}"
    if path.route is False:
        return Verdict.KEEP, "no route to the cluster now; kept until it is back"
    if path.source and path.local and not _same_address(path.source, path.local):
        return Verdict.DROP, f"the route to the cluster now leaves from {path.source}"
    return Verdict.ASK, ""


@dataclass(frozen=True)
class LinkCheck:
    """The last time a link was checked for a network change or a wake, as shown in
    status: ``at`` is wall-clock epoch seconds, ``outcome`` what the check found."""

    reason: str
    at: float
    outcome: str
