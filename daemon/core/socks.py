"""SOCKS5 server handshake (RFC 1928), sans-I/O: bytes in, bytes out.

Supports what ``ssh -D`` clients use: no authentication, the CONNECT command, and IPv4,
IPv6 and domain-name targets. The caller feeds whatever bytes arrived with
:meth:`Socks5Handshake.feed`, writes back what it returns, and once ``request`` is set
opens the channel and sends :func:`reply`. Bytes the client sent after the request
(pipelined data) are kept in ``leftover`` and belong to the forwarded stream.
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from dataclasses import dataclass

__all__ = ["Reply", "Socks5Handshake", "SocksError", "SocksRequest", "reply"]

VERSION = 5
NO_AUTH = 0x00
NO_ACCEPTABLE = 0xFF
CMD_CONNECT = 0x01
ATYP_IPV4 = 0x01
ATYP_DOMAIN = 0x03
ATYP_IPV6 = 0x04
# A greeting plus the largest request is well under this; more means a confused client.
MAX_HANDSHAKE = 1024


class Reply(enum.IntEnum):
    SUCCEEDED = 0x00
    GENERAL_FAILURE = 0x01
    NOT_ALLOWED = 0x02
    NETWORK_UNREACHABLE = 0x03
    HOST_UNREACHABLE = 0x04
    CONNECTION_REFUSED = 0x05
    TTL_EXPIRED = 0x06
    COMMAND_NOT_SUPPORTED = 0x07
    ADDRESS_TYPE_NOT_SUPPORTED = 0x08


class SocksError(ValueError):
    """The client broke the protocol. ``response`` (maybe empty) should be sent before
    closing the connection."""

    def __init__(self, message: str, response: bytes = b"") -> None:
        super().__init__(message)
        self.response = response


@dataclass(frozen=True)
class SocksRequest:
    host: str
    port: int


class _Phase(enum.Enum):
    GREETING = 1
    REQUEST = 2
    DONE = 3


def reply(code: Reply) -> bytes:
    """The reply to a request. The bound address is reported as 0.0.0.0:0: the real
    one is on the far side of the SSH channel and clients do not use it."""
    return bytes([VERSION, code, 0, ATYP_IPV4, 0, 0, 0, 0, 0, 0])


class Socks5Handshake:
    """Incremental parser for the greeting and the request."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._phase = _Phase.GREETING
        self.request: SocksRequest | None = None
        self.leftover = b""

    def feed(self, data: bytes) -> bytes:
        """Take bytes from the client; return bytes to send back (maybe empty).

        Raises SocksError on a protocol violation.
        """
        if self._phase is _Phase.DONE:
            raise SocksError("handshake already complete")
        self._buf += data
        if len(self._buf) > MAX_HANDSHAKE:
            raise SocksError("handshake too long")
        out = b""
        if self._phase is _Phase.GREETING:
            out += self._greeting()
        if self._phase is _Phase.REQUEST:
            self._request()
        return out

    def _greeting(self) -> bytes:
        buf = self._buf
        if not buf:
            return b""
        if buf[0] != VERSION:
            raise SocksError(f"not a SOCKS5 client (version byte {buf[0]})")
        if len(buf) < 2 or len(buf) < 2 + buf[1]:
            return b""
        methods = bytes(buf[2 : 2 + buf[1]])
        del buf[: 2 + len(methods)]
        if NO_AUTH not in methods:
            raise SocksError(
                "client offers no method without authentication",
                bytes([VERSION, NO_ACCEPTABLE]),
            )
        self._phase = _Phase.REQUEST
        return bytes([VERSION, NO_AUTH])

    def _request(self) -> None:
        buf = self._buf
        if len(buf) < 5:
            return
        ver, cmd, _rsv, atyp = buf[0], buf[1], buf[2], buf[3]
        if ver != VERSION:
            raise SocksError(f"bad version byte {ver} in request", reply(Reply.GENERAL_FAILURE))
        if atyp == ATYP_IPV4:
            end = 4 + 4
        elif atyp == ATYP_IPV6:
            end = 4 + 16
        elif atyp == ATYP_DOMAIN:
            end = 5 + buf[4]
        else:
            raise SocksError(
                f"address type {atyp} not supported", reply(Reply.ADDRESS_TYPE_NOT_SUPPORTED)
            )
        if len(buf) < end + 2:
            return
        if cmd != CMD_CONNECT:
            raise SocksError(
                f"command {cmd} not supported (only CONNECT)",
                reply(Reply.COMMAND_NOT_SUPPORTED),
            )
        raw = bytes(buf[4:end])
        if atyp == ATYP_IPV4:
            host = str(ipaddress.IPv4Address(raw))
        elif atyp == ATYP_IPV6:
            host = str(ipaddress.IPv6Address(raw))
        else:
            try:
                host = raw[1:].decode("ascii")
            except UnicodeDecodeError:
                raise SocksError("domain name is not ASCII", reply(Reply.GENERAL_FAILURE)) from None
            if not host:
                raise SocksError("empty domain name", reply(Reply.GENERAL_FAILURE))
        (port,) = struct.unpack("!H", buf[end : end + 2])
        self.request = SocksRequest(host, port)
        self.leftover = bytes(buf[end + 2 :])
        buf.clear()
        self._phase = _Phase.DONE
