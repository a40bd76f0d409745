"""What a cluster serves, from what its kernel and Jupyter say: the listening TCP sockets
of ``/proc/net/tcp`` and ``/proc/net/tcp6``, and Jupyter's runtime files
(``jpserver-*.json``). The cluster is not trusted more than a log file: every input is
bounded, odd lines are counted and skipped, nothing raises. Pure: the engine reads the
bytes over the SSH link and hands them in."""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field

__all__ = [
    "MAX_FILE_BYTES",
    "MAX_RUNTIME_FILES",
    "MAX_SOCKETS",
    "Jupyter",
    "Listening",
    "Sockets",
    "parse_jupyter_runtime",
    "parse_proc_net_tcp",
]

# Bounds on what one discovery reads from a cluster.
MAX_FILE_BYTES = 1 << 20  # of /proc/net/tcp(6): about 6 000 sockets
MAX_SOCKETS = 4096  # listening sockets kept
MAX_RUNTIME_FILES = 16  # Jupyter runtime files read
MAX_RUNTIME_BYTES = 16 << 10

_LISTEN = "0A"
WEB_PORTS = frozenset({80, 443})
MAX_OFFERED = 32


@dataclass(frozen=True, order=True)
class Listening:
    """A TCP port listening on loopback or on every interface (reachable through the
    cluster's sshd as ``127.0.0.1:port``)."""

    port: int


@dataclass
class Sockets:
    """The listening ports found, and how many lines could not be read."""

    ports: set[int] = field(default_factory=set)
    odd_lines: int = 0
    truncated: bool = False


def _address(hex_addr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``/proc/net/tcp``'s address: little-endian 32-bit words in hex."""
    try:
        raw = bytes.fromhex(hex_addr)
    except ValueError:
        return None
    if len(raw) == 4:
        return ipaddress.IPv4Address(raw[::-1])
    if len(raw) == 16:
        words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
        return ipaddress.IPv6Address(words)
    return None


def _reachable(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Bound where the cluster's sshd reaches it as 127.0.0.1 (or ::1)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback or ip.is_unspecified


def parse_proc_net_tcp(text: str, into: Sockets | None = None) -> Sockets:
    """The listening ports of one ``/proc/net/tcp`` or ``tcp6`` text (header line first)."""
    found = into if into is not None else Sockets()
    for n, line in enumerate(text.splitlines()):
        fields = line.split()
        if n == 0 and fields[:1] == ["sl"]:
            continue  # the header
        if len(fields) < 4 or ":" not in fields[1]:
            found.odd_lines += bool(line.strip())
            continue
        if fields[3] != _LISTEN:
            continue
        addr_hex, _, port_hex = fields[1].partition(":")
        ip = _address(addr_hex)
        try:
            port = int(port_hex, 16)
        except ValueError:
            port = 0
        if ip is None or not 1 <= port <= 65535:
            found.odd_lines += 1
            continue
        if not _reachable(ip):
            continue
        if port not in found.ports and len(found.ports) >= MAX_SOCKETS:
            found.truncated = True
            continue
        found.ports.add(port)
    return found


@dataclass(frozen=True)
class Jupyter:
    """A Jupyter server as its runtime file describes it."""

    port: int
    token: str
    base_url: str  # starts and ends with "/"
    secure: bool  # serves https

    def url(self, local_port: int, host: str = "localhost") -> str:
        scheme = "https" if self.secure else "http"
        query = f"?token={self.token}" if self.token else ""
        return f"{scheme}://{host}:{local_port}{self.base_url}lab{query}"


def parse_jupyter_runtime(text: str) -> Jupyter | None:
    """A ``jpserver-*.json`` (or ``nbserver-*.json``) file; None when it is not one."""
    if len(text) > MAX_RUNTIME_BYTES:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    port, token = data.get("port"), data.get("token", "")
    base = data.get("base_url", "/")
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        return None
    if not isinstance(token, str) or not isinstance(base, str):
        return None
    # A token or path with room for a second URL part is not a Jupyter's own.
    if not all(c.isalnum() or c in "-_." for c in token) or len(token) > 256:
        return None
    if not base.startswith("/") or len(base) > 256 or any(c in base for c in "?#\\ \t\r\n"):
        return None
    secure = data.get("secure")
    if not isinstance(secure, bool):
        url = data.get("url")
        secure = isinstance(url, str) and url.startswith("https:")
    return Jupyter(port, token, base if base.endswith("/") else base + "/", secure)


# -- what to do with what was found -------------------------------------------------------


@dataclass(frozen=True)
class Found:
    """One discovered service: its port, what it is, and what it answered."""

    port: int
    kind: str  # "jupyter", "http", or "tcp" (nothing more is known)
    title: str | None = None  # an HTTP page's <title>, cleaned
    jupyter: Jupyter | None = None
    probed: bool = True  # False: found, not yet asked what it is


def kind_of(
    port: int, jupyters: dict[int, Jupyter], http_title: str | None, probed: bool = True
) -> Found:
    """What the port is: a Jupyter server its runtime file names, else what it answered
    (``probed`` False: nothing asked yet)."""
    if port in jupyters:
        return Found(port, "jupyter", http_title, jupyters[port])
    if http_title is not None:
        return Found(port, "http", http_title or None)
    return Found(port, "tcp", probed=probed)


def clean_title(raw: bytes) -> str | None:
    """The ``<title>`` of the start of an HTML page, at most 60 printable characters;
    None when the bytes are not HTTP; "" when HTTP without a title."""
    if not raw.startswith(b"HTTP/"):
        return None
    head = raw[:65536].decode("utf-8", "replace")
    lower = head.lower()
    start = lower.find("<title")
    if start < 0:
        return ""
    start = lower.find(">", start)
    end = lower.find("</title", start)
    if start < 0 or end < 0:
        return ""
    text = " ".join(head[start + 1 : end].split())
    text = "".join(c for c in text if c.isprintable())
    return text[:60]


@dataclass(frozen=True)
class Plan:
    """For one cluster: ports to forward automatically, ports to offer, configured
    forwards whose remote port has no listener."""

    forward: tuple[int, ...]
    offer: tuple[int, ...]
    no_service: tuple[int, ...]


def plan(
    found: dict[int, Found],
    configured: set[int],
    chosen: set[int],
    auto_kinds: set[str],
    max_auto: int = 4,
) -> Plan:
    """``configured``: remote ports of the config's forwards to the cluster itself;
    ``chosen``: ports the user asked to forward. An automatic kind is forwarded (at most
    ``max_auto``, lowest ports first), any other port is offered."""
    forward: list[int] = []
    offer: list[int] = []
    for port in sorted(found):
        if port in configured or port in chosen:
            continue
        if port < 1024 and port not in WEB_PORTS and found[port].kind != "jupyter":
            continue  # the system's own (sshd, rpcbind, mail): not the job's
        if len(offer) >= MAX_OFFERED:
            break
        if found[port].kind in auto_kinds and len(forward) < max_auto:
            forward.append(port)
        else:
            offer.append(port)
    return Plan(
        forward=tuple(forward),
        offer=tuple(offer),
        no_service=tuple(sorted(p for p in configured if p not in found)),
    )
