"""Host addresses: how they are written beside a port."""

from __future__ import annotations

__all__ = ["hostport"]


def hostport(host: str, port: int) -> str:
    """``host:port``, with an IPv6 literal in brackets (``[::1]:22``)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
