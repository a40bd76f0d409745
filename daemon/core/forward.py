"""Forward specs: OpenSSH ``-L``/``-D`` syntax, parsed into typed records.

``[bind_address:]port:host:hostport`` as ``ssh -L`` takes it, plus a bare ``PORT`` meaning
``PORT:localhost:PORT``. Dynamic (SOCKS) forwards take ``[bind_address:]port`` as ``ssh -D``.
IPv6 addresses go in brackets. Pure: nothing here touches a socket.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["ForwardSpec", "parse_dynamic", "parse_forward"]

# One field: a bracketed IPv6 literal or a run without ':' (OpenSSH also splits on '/').
_FIELD = r"\[[^\]]*\]|[^:/\[\]]*"
_SPLIT = re.compile(rf"({_FIELD})(?:[:/]|$)")


@dataclass(frozen=True)
class ForwardSpec:
    """One local or dynamic forward.

    ``bind_address`` is None when the spec names none: the caller's default applies
    (``tunnels.bind_address``, loopback unless the user changed it).
    ``local_port`` 0 asks for any free port. A dynamic forward has no remote end.
    """

    spec: str
    local_port: int
    remote_host: str = ""
    remote_port: int = 0
    bind_address: str | None = None
    dynamic: bool = False

    def __str__(self) -> str:
        return self.spec


def _fields(spec: str) -> list[str]:
    fields: list[str] = []
    pos = 0
    while pos < len(spec):
        m = _SPLIT.match(spec, pos)
        if m is None or m.end() == pos:
            raise ValueError(f"cannot read {spec!r}: unbalanced '[' or ']'")
        fields.append(m.group(1))
        pos = m.end()
    if spec.endswith((":", "/")):
        fields.append("")
    return fields


def _port(text: str, what: str, spec: str, *, allow_zero: bool) -> int:
    if not text.isdigit():
        raise ValueError(f"{what} {text!r} in {spec!r} is not a port number")
    port = int(text)
    low = 0 if allow_zero else 1
    if not low <= port <= 65535:
        raise ValueError(f"{what} {port} in {spec!r} is outside {low}-65535")
    return port


def _host(text: str, what: str, spec: str) -> str:
    host = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    if not host or any(c.isspace() for c in host):
        raise ValueError(f"{what} {text!r} in {spec!r} is empty or has spaces")
    return host


def parse_forward(spec: str) -> ForwardSpec:
    """Parse an ``ssh -L`` spec or a bare port; raise ValueError saying what is wrong."""
    text = spec.strip()
    if not text:
        raise ValueError("empty forward spec; use PORT or [bind_address:]port:host:hostport")
    fields = _fields(text)
    if len(fields) == 1:
        port = _port(fields[0], "port", text, allow_zero=False)
        return ForwardSpec(spec=text, local_port=port, remote_host="localhost", remote_port=port)
    if len(fields) == 3:
        bind, (local, host, remote) = None, fields
    elif len(fields) == 4:
        bind = _host(fields[0], "bind address", text)
        local, host, remote = fields[1:]
    else:
        raise ValueError(
            f"cannot read {text!r}: use PORT or [bind_address:]port:host:hostport "
            "(IPv6 addresses in brackets)"
        )
    return ForwardSpec(
        spec=text,
        bind_address=bind,
        local_port=_port(local, "local port", text, allow_zero=True),
        remote_host=_host(host, "remote host", text),
        remote_port=_port(remote, "remote port", text, allow_zero=False),
    )


def parse_dynamic(spec: str) -> ForwardSpec:
    """Parse an ``ssh -D`` spec, ``[bind_address:]port``."""
    text = spec.strip()
    fields = _fields(text) if text else []
    if len(fields) == 1:
        bind, local = None, fields[0]
    elif len(fields) == 2:
        bind, local = _host(fields[0], "bind address", text), fields[1]
    else:
        raise ValueError(f"cannot read dynamic forward {text!r}: use [bind_address:]port")
    port = _port(local, "local port", text, allow_zero=True)
    return ForwardSpec(spec=text, local_port=port, bind_address=bind, dynamic=True)
