"""A fake Rescale API: a real HTTP(S) server on loopback, in a thread, serving the shapes
of Rescale's API (paginated job lists, instances) and, on request, its failures (401,
404, 429 with Retry-After, 500, slow and malformed answers).

Rescale's servers cannot exist here; everything else (sockets, HTTP, TLS) is real.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

if TYPE_CHECKING:
    from .daemonproc import Env

__all__ = ["FakeRescale", "Fault", "node", "use_api"]

KEY = "fake-rescale-key-0123456789abcdef"


@dataclass
class Fault:
    """What the next ``times`` requests whose path starts with ``prefix`` get."""

    prefix: str
    status: int = 500
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    delay: float = 0.0
    times: int = 1


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    authorization: str | None
    at: float


class FakeRescale:
    """``url`` is the base to configure (``http://127.0.0.1:PORT``, or https with
    ``cert``). Jobs and instances are set with :meth:`job` and :meth:`instances`."""

    def __init__(self, key: str = KEY, *, cert: tuple[Path, Path] | None = None) -> None:
        self.key = key
        self.jobs: dict[str, dict[str, Any]] = {}
        self.nodes: dict[str, list[dict[str, Any]] | None] = {}
        self.faults: list[Fault] = []
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        scheme = "http"
        if cert is not None:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(str(cert[0]), str(cert[1]))
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> FakeRescale:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the data --------------------------------------------------------------------

    def job(
        self, jid: str, status: str = "Queued", cluster: str = "Not Started", name: str = ""
    ) -> None:
        """Add or update a job (newest first in the list, like Rescale)."""
        with self.lock:
            old = self.jobs.pop(jid, None)
            self.jobs = {
                jid: {
                    "id": jid,
                    "name": name or (old["name"] if old else f"job {jid}"),
                    "dateInserted": "2026-12-02T10:00:00.000000Z",
                    "jobStatus": {"content": status, "labelClass": "", "useLabel": False},
                    "clusterStatusDisplay": {
                        "content": cluster,
                        "labelClass": "",
                        "useLabel": False,
                    },
                    "owner": "user@example.com",
                    "isVisible": True,
                },
                **self.jobs,
            }

    def instances(self, jid: str, nodes: list[dict[str, Any]] | None) -> None:
        """``None``: the instances endpoint answers 404 for this job."""
        with self.lock:
            self.nodes[jid] = nodes

    def fail(self, fault: Fault) -> None:
        with self.lock:
            self.faults.append(fault)

    def count(self, prefix: str = "/api/") -> int:
        with self.lock:
            return sum(1 for r in self.requests if r.path.startswith(prefix))

    # -- serving ---------------------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)  # absolute-form when reached through a proxy
        path, query = parts.path, parse_qs(parts.query)
        with self.lock:
            self.requests.append(
                Request("GET", path, query, h.headers.get("Authorization"), time.time())
            )
            fault = next((f for f in self.faults if path.startswith(f.prefix)), None)
            if fault is not None:
                fault.times -= 1
                if fault.times <= 0:
                    self.faults.remove(fault)
        if fault is not None:
            if fault.delay:
                time.sleep(fault.delay)
            body = fault.body if fault.body is not None else b'{"detail": "fault"}'
            self._send(h, fault.status, body, fault.headers)
            return
        if h.headers.get("Authorization") not in (f"Token {self.key}", f"Bearer {self.key}"):
            self._send(h, 401, b'{"detail": "Invalid token."}')
            return
        if path == "/api/v2/jobs/":
            self._send(h, 200, self._jobs_page(query))
            return
        if path.startswith("/api/v2/jobs/") and path.endswith("/instances/"):
            jid = path.split("/")[4]
            with self.lock:
                known = jid in self.jobs
                nodes = self.nodes.get(jid, [])
            if not known or nodes is None:
                self._send(h, 404, b'{"detail": "Not found."}')
                return
            page = {"count": len(nodes), "next": None, "previous": None, "results": nodes}
            self._send(h, 200, json.dumps(page).encode())
            return
        self._send(h, 404, b'{"detail": "Not found."}')

    def _jobs_page(self, query: dict[str, list[str]]) -> bytes:
        size = int(query.get("page_size", ["10"])[0])
        page = int(query.get("page", ["1"])[0])
        with self.lock:
            jobs = list(self.jobs.values())
        chunk = jobs[(page - 1) * size : page * size]
        more = page * size < len(jobs)
        base = f"{self.url}/api/v2/jobs/"
        body = {
            "count": len(jobs),
            "next": f"{base}?page={page + 1}&page_size={size}" if more else None,
            "previous": f"{base}?page={page - 1}&page_size={size}" if page > 1 else None,
            "results": chunk,
        }
        return json.dumps(body).encode()

    @staticmethod
    def _send(
        h: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict[str, str] | None = None
    ) -> None:
        try:
            h.send_response(status)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                h.send_header(name, value)
            h.end_headers()
            h.wfile.write(body)
        except OSError:
            pass  # the client gave up (a timeout test)


def node(ip: str, user: str, port: int, role: str = "MPI_MASTER") -> dict[str, Any]:
    """One instance as the API lists it."""
    return {"publicIp": ip, "username": user, "sshPort": port, "role": role, "id": "i-1"}


def use_api(env: Env, api: FakeRescale, forwards: list[str] | None = None) -> None:
    """Point ``env``'s daemon at ``api`` (RESCALE_API_KEY, [rescale] url, fast polls of
    5 s); logs may name jobs as ``uprod_<id>`` besides the test user."""
    if forwards is None:
        line = env.config.read_text().split("forwards = ", 1)[1].split("\n", 1)[0]
        forwards = json.loads(line)  # the forwards make_env chose
    text = env.config_text(forwards).replace(
        f"username_pattern = '{env.sshd.user}'",
        f"username_pattern = '(?:{env.sshd.user}|uprod_[A-Za-z0-9]+)'",
    )
    text += f"\n[rescale]\nurl = '{api.url}'\nfast_interval = 5\nslow_interval = 60\n"
    env.config.write_text(text)
    env.vars["RESCALE_API_KEY"] = api.key
