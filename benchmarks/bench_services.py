"""The services behind the test sshd, in a process of their own (so that a measuring client
and a service never share one interpreter's lock).

Echo and HTTP come from ``tests/helpers/services.py``; the throughput source streams as many bytes
as the client asks for (an 8-byte big-endian count) from one 1 MiB buffer, so a 1 GB
transfer costs no memory. Prints ``{"echo": port, "http": port, "stream": port}`` as one
JSON line, then serves until its stdin closes.
"""

from __future__ import annotations

import json
import socket
import socketserver
import sys
import threading
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from tests.helpers.services import echo_server, http_server

BLOCK = bytes(range(256)) * 4096  # 1 MiB


class _StreamHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(120)
        try:
            head = b""
            while len(head) < 8:
                more = sock.recv(8 - len(head))
                if not more:
                    return
                head += more
            left = int.from_bytes(head, "big")
            view = memoryview(BLOCK)
            while left > 0:
                n = min(left, len(BLOCK))
                sock.sendall(view[:n])
                left -= n
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(1 << 16):
                pass
        except OSError:
            pass


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256


def main() -> int:
    stream = _Server(("127.0.0.1", 0), _StreamHandler)
    thread = threading.Thread(target=stream.serve_forever, kwargs={"poll_interval": 0.5})
    thread.start()
    try:
        with ExitStack() as stack:
            ports = {
                "echo": int(stack.enter_context(echo_server())),
                "http": int(stack.enter_context(http_server())),
                "stream": int(stream.server_address[1]),
            }
            print(json.dumps(ports), flush=True)
            sys.stdin.read()  # until the parent closes the pipe (or dies)
    finally:
        stream.shutdown()
        stream.server_close()
        thread.join(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
