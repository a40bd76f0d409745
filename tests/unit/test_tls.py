"""Telling TLS from the first bytes a service answers to a ClientHello."""

from __future__ import annotations

import ssl

import pytest
from jobtunnel.daemon.core import tls
from jobtunnel.daemon.engine.discover import client_hello


def test_the_hello_is_one_a_tls_server_reads_as_such() -> None:
    hello = client_hello()
    assert hello[:2] == b"\x16\x03" and hello[5] == 0x01  # a handshake record: ClientHello
    # A real TLS server (the ssl module's) answers it with a ServerHello.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    server = context.wrap_bio(incoming, outgoing, server_side=True)
    incoming.write(hello)
    with pytest.raises(ssl.SSLError):
        server.do_handshake()  # no certificate: it refuses, with an alert
    assert tls.answers_tls(outgoing.read())


@pytest.mark.parametrize(
    ("first", "expected"),
    [
        (b"\x16\x03\x03\x00\x7a\x02", True),  # ServerHello
        (b"\x15\x03\x01\x00\x02", True),  # an alert (no cipher in common, bad SNI...)
        (b"\x15\x03", True),
        (b"\x16\x03\x01\x02\x00\x01", False),  # our own hello, echoed back
        (b"\x16\x03\x03", False),  # too short to tell a ServerHello
        (b"HTTP/1.1 400 Bad Request\r\n", False),
        (b"RFB 003.008\n", False),  # VNC's banner
        (b"SSH-2.0-OpenSSH_9.2\r\n", False),
        (b"", False),  # closed, or silence
        (b"\x16\x02\x00\x00\x00\x02", False),
    ],
)
def test_answers(first: bytes, expected: bool) -> None:
    assert tls.answers_tls(first) is expected


def test_protocols_no_browser_opens_are_not_asked() -> None:
    assert tls.worth_asking(8888) and tls.worth_asking(443)
    assert not tls.worth_asking(5901)  # VNC
    assert not tls.worth_asking(47827)  # STAR-CCM+
    assert not tls.worth_asking(None)  # SOCKS
