"""Whether a forwarded service speaks TLS, told by its first answer to a ClientHello.

Rescale's Jupyter serves https on 8888 with a self-signed certificate; other services on
the same cluster serve plain http. The browser needs the right scheme, and a port number
is only a guess, so the tunnel asks: it sends the ClientHello a browser would send and
reads the first bytes back. A TLS server answers with an alert record or a handshake
record that holds a ServerHello (``16 03 xx len len 02``); anything else (an HTTP error
page, a VNC banner, the hello echoed back, silence, a close) is not TLS. Pure: the
answer is read here; the hello is the ssl module's, made and sent by the engine.
"""

from __future__ import annotations

__all__ = ["ANSWER_BYTES", "NOT_ASKED", "answers_tls", "worth_asking"]

HANDSHAKE, ALERT = 0x16, 0x15
SERVER_HELLO = 0x02
ANSWER_BYTES = 6  # a record header (5) and the handshake message's type

# Protocols no browser opens; a ClientHello there could only upset the service.
NOT_ASKED = frozenset({22, 5900, 5901, 5902, 11111, 47827})


def answers_tls(first: bytes) -> bool:
    """Whether ``first`` (the start of what the service sent back, up to
    :data:`ANSWER_BYTES`) is a TLS server's answer."""
    if len(first) < 2 or first[1] != 0x03:
        return False
    if first[0] == ALERT:
        return True
    return first[0] == HANDSHAKE and len(first) >= ANSWER_BYTES and first[5] == SERVER_HELLO


def worth_asking(remote_port: int | None) -> bool:
    """Whether a forward to ``remote_port`` is asked at all (not SOCKS, not a protocol
    that no browser opens)."""
    return remote_port is not None and remote_port not in NOT_ASKED
