"""SOCKS5 handshake parsing, byte by byte and all at once."""

from __future__ import annotations

import contextlib
import socket
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jobtunnel.daemon.core.socks import Reply, Socks5Handshake, SocksError, reply

pytestmark = pytest.mark.timeout(60)

GREETING = b"\x05\x01\x00"


def request(atyp: int, addr: bytes, port: int, cmd: int = 1) -> bytes:
    if atyp == 3:
        addr = bytes([len(addr)]) + addr
    return bytes([5, cmd, 0, atyp]) + addr + struct.pack("!H", port)


@pytest.mark.parametrize(
    ("atyp", "addr", "host"),
    [
        (1, socket.inet_aton("10.1.2.3"), "10.1.2.3"),
        (4, socket.inet_pton(socket.AF_INET6, "2001:db8::1"), "2001:db8::1"),
        (3, b"cluster.example.com", "cluster.example.com"),
    ],
)
def test_connect_request_parsed(atyp: int, addr: bytes, host: str) -> None:
    hs = Socks5Handshake()
    assert hs.feed(GREETING) == b"\x05\x00"
    assert hs.request is None
    assert hs.feed(request(atyp, addr, 8888) + b"GET /") == b""
    assert hs.request is not None
    assert (hs.request.host, hs.request.port) == (host, 8888)
    assert hs.leftover == b"GET /"


@given(st.data())
def test_any_split_gives_the_same_result(data: st.DataObject) -> None:
    wire = b"\x05\x02\x02\x00" + request(3, b"localhost", 443) + b"tail"
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=10)))
    hs = Socks5Handshake()
    out = b""
    pos = 0
    for cut in [*cuts, len(wire)]:
        if hs.request is not None:
            break
        out += hs.feed(wire[pos:cut])
        pos = cut
    assert out == b"\x05\x00"
    assert hs.request is not None and (hs.request.host, hs.request.port) == ("localhost", 443)
    assert hs.leftover + wire[pos:] == b"tail"


def test_not_socks5() -> None:
    with pytest.raises(SocksError):
        Socks5Handshake().feed(b"\x04\x01\x00\x50")
    with pytest.raises(SocksError):
        Socks5Handshake().feed(b"GET / HTTP/1.1\r\n")


def test_auth_only_client_refused_with_no_acceptable_method() -> None:
    with pytest.raises(SocksError) as info:
        Socks5Handshake().feed(b"\x05\x01\x02")
    assert info.value.response == b"\x05\xff"


def test_bind_and_udp_not_supported() -> None:
    for cmd in (2, 3):
        hs = Socks5Handshake()
        hs.feed(GREETING)
        with pytest.raises(SocksError) as info:
            hs.feed(request(1, b"\x7f\x00\x00\x01", 80, cmd))
        assert info.value.response[1] == Reply.COMMAND_NOT_SUPPORTED


def test_bad_address_type_and_empty_domain() -> None:
    hs = Socks5Handshake()
    hs.feed(GREETING)
    with pytest.raises(SocksError) as info:
        hs.feed(b"\x05\x01\x00\x09\x00\x00\x00\x00")
    assert info.value.response[1] == Reply.ADDRESS_TYPE_NOT_SUPPORTED
    hs = Socks5Handshake()
    hs.feed(GREETING)
    with pytest.raises(SocksError):
        hs.feed(b"\x05\x01\x00\x03\x00\x00\x50")


def test_oversized_handshake_refused() -> None:
    hs = Socks5Handshake()
    with pytest.raises(SocksError):
        hs.feed(b"\x05\xff" + b"\x01" * 2000)


def test_reply_format() -> None:
    assert reply(Reply.SUCCEEDED) == b"\x05\x00\x00\x01\x00\x00\x00\x00\x00\x00"
    assert len(reply(Reply.CONNECTION_REFUSED)) == 10


@given(st.binary(max_size=300))
def test_garbage_never_crashes(blob: bytes) -> None:
    hs = Socks5Handshake()
    with contextlib.suppress(SocksError):
        hs.feed(blob)
