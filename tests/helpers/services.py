"""Small real servers on loopback for the tunnel tests: echo, HTTP, and a client helper.

They run in their own threads (not in the event loop under test), so a stall in the
engine cannot be hidden by the service sharing its loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.server
import socket
import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class _EchoHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(120)
        try:
            while data := sock.recv(1 << 16):
                sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)  # half-close: echo the client's EOF
        except OSError:
            pass


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256


@contextmanager
def _serving(server: socketserver.BaseServer) -> Iterator[int]:
    """Serve ``server`` in its own thread; yield its port; shut it down after."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield int(server.server_address[1])  # type: ignore[index]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@contextmanager
def echo_server() -> Iterator[int]:
    """Echo server on 127.0.0.1; yields its port."""
    server = _Server(("127.0.0.1", 0), _EchoHandler)
    with _serving(server) as port:
        yield port


HTTP_BODY = b"hello from the cluster\n" * 100


class _HttpHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(HTTP_BODY)))
        self.end_headers()
        self.wfile.write(HTTP_BODY)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def http_server() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HttpHandler)
    server.daemon_threads = True
    with _serving(server) as port:
        yield port


async def roundtrip(port: int, payload: bytes, timeout: float = 30.0) -> bytes:
    """Send ``payload`` to 127.0.0.1:port, half-close, read everything back."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:

            async def send() -> None:
                for i in range(0, len(payload), 1 << 16):
                    writer.write(payload[i : i + (1 << 16)])
                    await writer.drain()
                writer.write_eof()

            sender = asyncio.ensure_future(send())
            received = await reader.read(-1)
            await sender
            return received
        finally:
            writer.close()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def http_get(port: int, timeout: float = 30.0) -> bytes:
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
            data = await reader.read(-1)
        finally:
            writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200"), head
    return body


def pattern(size: int) -> bytes:
    """Deterministic, incompressible-enough test data."""
    block = hashlib.sha256(b"jobtunnel").digest() * 2048  # 64 KiB
    return (block * (size // len(block) + 1))[:size]


class _SourceHandler(socketserver.BaseRequestHandler):
    size = 0

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(120)
        try:
            sock.sendall(pattern(self.server.size))  # type: ignore[attr-defined]
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(1 << 16):
                pass
        except OSError:
            pass


@contextmanager
def source_server(size: int) -> Iterator[int]:
    """Sends ``size`` bytes of :func:`pattern` to every client as fast as it can."""
    server = _Server(("127.0.0.1", 0), _SourceHandler)
    server.size = size  # type: ignore[attr-defined]
    with _serving(server) as port:
        yield port


class _SlowSinkHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(120)
        try:
            threading.Event().wait(self.server.delay)  # type: ignore[attr-defined]
            digest = hashlib.sha256()
            while data := sock.recv(1 << 16):
                digest.update(data)
            sock.sendall(digest.hexdigest().encode())
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass


@contextmanager
def slow_sink_server(delay: float) -> Iterator[int]:
    """Reads nothing for ``delay`` seconds, then everything; answers its sha256."""
    server = _Server(("127.0.0.1", 0), _SlowSinkHandler)
    server.delay = delay  # type: ignore[attr-defined]
    with _serving(server) as port:
        yield port
