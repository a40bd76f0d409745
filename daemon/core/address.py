"""Host addresses: how they are written beside a port, and whether one may be used."""

from __future__ import annotations

import ipaddress
import re

__all__ = ["address_problem", "check_host", "hostport", "parse_user_hostport"]

# Why an address is not public, most specific first (a loopback address is also private).
_ADDRESS_KINDS = (
    ("is_loopback", "a loopback"),
    ("is_link_local", "a link-local"),
    ("is_multicast", "a multicast"),
    ("is_unspecified", "an unspecified"),
    ("is_private", "a private"),
    ("is_reserved", "a reserved"),
)
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_DIGITS = {8: frozenset("01234567"), 10: frozenset("0123456789"), 16: frozenset("0123456789abcdef")}


def hostport(host: str, port: int) -> str:
    """``host:port``, with an IPv6 literal in brackets (``[::1]:22``)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def address_problem(ip_text: str, allow_private: bool) -> str | None:
    """Why an IP address may not be connected to (None: it is public, or private ones are
    allowed). The one rule for literals found in a log and for what a DNS name resolves
    to. Anything that is not an IP literal is refused: the caller resolved it."""
    try:
        ip = ipaddress.ip_address(ip_text.split("%", 1)[0])
    except ValueError:
        return "not an IP address"
    if allow_private or (ip.is_global and not ip.is_multicast and not ip.is_reserved):
        return None
    words = next((w for attr, w in _ADDRESS_KINDS if getattr(ip, attr)), "a non-public")
    return f"{words} address (set detect.allow_private_addresses to accept it)"


def parse_user_hostport(text: str) -> tuple[str, str, int]:
    """``user@host[:port]`` (IPv6 in brackets: ``user@[::1]:22``) as (user, host, port);
    port 22 when absent. Raises ValueError saying what is wrong."""
    user, at, rest = text.strip().rpartition("@")
    if not at or not user or any(c.isspace() or c in "@:/" for c in user):
        raise ValueError("must be user@host or user@host:port")
    if rest.startswith("["):
        host, bracket, tail = rest[1:].partition("]")
        if not bracket or (tail and not tail.startswith(":")):
            raise ValueError("an IPv6 address must be written [addr] or [addr]:port")
        port_text = tail[1:] if tail else ""
    else:
        host, _, port_text = rest.partition(":")
        if ":" in port_text:
            raise ValueError("write an IPv6 address in brackets: user@[addr]:port")
    if not host or any(c.isspace() or c in "@/[]" for c in host):
        raise ValueError("must be user@host or user@host:port")
    port = 22
    if port_text or rest.endswith(":"):
        if not (port_text.isascii() and port_text.isdigit()) or not 1 <= int(port_text) <= 65535:
            raise ValueError(f"port {port_text!r} is not a number from 1 to 65535")
        port = int(port_text)
    return user, host.lower(), port


def inet_aton(text: str) -> int | None:
    """The IPv4 address the system resolver reads in ``text`` (None: not a number).

    The forms of C's ``inet_aton``, which ``getaddrinfo`` accepts as numeric hosts: one to
    four parts, each decimal, octal (leading ``0``) or hex (``0x``), the last filling the
    remaining bytes (``127.1``, ``0x7f.0x1``, ``0177.0.0.1``, ``2130706433``).
    """
    parts = text.lower().split(".")
    if not 1 <= len(parts) <= 4:
        return None
    values = []
    for part in parts:
        if part.startswith("0x"):
            digits, base = part[2:], 16
        elif len(part) > 1 and part.startswith("0"):
            digits, base = part[1:], 8
        else:
            digits, base = part, 10
        if not digits or not set(digits) <= _DIGITS[base]:
            return None
        values.append(int(digits, base))
    *head, last = values
    if any(v > 255 for v in head) or last >= 1 << (8 * (4 - len(head))):
        return None
    return sum(v << (8 * (3 - i)) for i, v in enumerate(head)) + last


def check_host(host: str, allow_private: bool) -> tuple[str, str | None]:
    """Normalise a host and say why it is unusable (None when it is fine).

    A number the resolver would read as an IPv4 address but that is not written as the
    canonical dotted quad (hex, octal, short or one integer) is refused outright, whatever
    its value: such forms are how a file spells ``127.0.0.1`` past a check, and no cluster
    address is printed that way.
    """
    host = host.strip().rstrip(".").strip("[]")
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        ip = None
    if ip is not None:
        host = str(ip)
        return host, address_problem(host, allow_private)
    host = host.lower()
    if inet_aton(host) is not None:
        return host, "a numeric address not written as a dotted quad (hex, octal or short)"
    labels = host.split(".")
    if len(host) > 253 or not all(_LABEL.fullmatch(lb) for lb in labels):
        return host, "not a valid IP address or DNS name"
    if labels[-1].isdigit():
        return host, "not a valid IPv4 address"
    if len(labels) < 2:
        return host, "not a fully qualified DNS name"
    if not allow_private and (host == "localhost" or labels[-1] in ("localhost", "local")):
        return host, "a loopback or local-network name (set detect.allow_private_addresses)"
    return host, None
