"""Discovery over a real SSH connection to the suite's sshd: the socket table and
Jupyter's runtime files read through SFTP, new ports probed for what they serve."""

from __future__ import annotations

import http.server
import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncssh
import pytest
from jobtunnel.daemon.core.discovery import Found
from jobtunnel.daemon.engine import discover as discover_module
from jobtunnel.daemon.engine.discover import ClusterFiles, discover, probe

from tests.helpers.asyncrun import run
from tests.helpers.services import HTTP_BODY, http_get, http_server
from tests.helpers.sshd import SshServer
from tests.helpers.tunnels import fast_options, make_tunnel, running

pytestmark = [pytest.mark.sshd, pytest.mark.timeout(180)]


class _Titled(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<html><head><title>  STAR-CCM+\n server </title></head></html>"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def titled_server() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Titled)
    server.daemon_threads = True
    import threading

    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


async def probe_all(
    conn: asyncssh.SSHClientConnection, found: dict[int, Found]
) -> dict[int, Found]:
    """Probe until every port was asked (this machine may listen on many)."""
    for _ in range(200):  # 8 a call: up to 1600 ports
        learnt = await probe(conn, found)
        if not learnt:
            break
        found = found | learnt
    return found


async def connect(sshd: SshServer) -> asyncssh.SSHClientConnection:
    return await asyncssh.connect(
        "127.0.0.1",
        sshd.port,
        username=sshd.user,
        client_keys=[str(sshd.client_key)],
        known_hosts=None,
        config=[],
    )


def test_listening_ports_titles_and_a_jupyter_runtime_file(sshd: SshServer, tmp_path: Path) -> None:
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    with http_server() as plain, titled_server() as titled, socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        quiet = silent.getsockname()[1]
        (runtime / "jpserver-4242.json").write_text(
            json.dumps({"port": plain, "token": "abc123", "base_url": "/", "secure": False})
        )
        (runtime / "jpserver-bad.json").write_text("{not json")
        (runtime / "other.json").write_text(json.dumps({"port": titled}))

        async def main() -> None:
            conn = await connect(sshd)
            try:
                found, sockets = await discover(conn, runtime_dir=str(runtime))
                assert not found[titled].probed  # shown before anyone asked it
                found = await probe_all(conn, found)
            finally:
                conn.close()
            assert {plain, titled, quiet, sshd.port} <= sockets.ports
            assert found[plain].kind == "jupyter" and found[plain].jupyter is not None
            assert found[plain].jupyter.url(9999) == "http://localhost:9999/lab?token=abc123"
            assert found[titled].kind == "http" and found[titled].title == "STAR-CCM+ server"
            # Accepts and says nothing: not HTTP, known only as a port.
            assert found[quiet].kind == "tcp"

        run(main())


def test_a_kept_session_lists_the_runtime_folder_only_when_it_may_have_changed(
    sshd: SshServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    listings: list[str] = []
    real_listdir = asyncssh.SFTPClient.listdir

    async def counted(self: asyncssh.SFTPClient, path: str = ".") -> object:
        listings.append(path)
        return await real_listdir(self, path)

    monkeypatch.setattr(asyncssh.SFTPClient, "listdir", counted)
    with http_server() as first, http_server() as second:

        async def look(files: ClusterFiles, known: dict[int, Found]) -> dict[int, Found]:
            found, _ = await discover(files, known, runtime_dir=str(runtime))
            return found

        async def main() -> None:
            conn = await connect(sshd)
            files = ClusterFiles(conn)
            try:
                found = await look(files, {})
                found = await look(files, found)  # once more after a change (mtime is whole s)
                before = len(listings)
                for _ in range(5):
                    found = await look(files, found)
                assert len(listings) == before  # nothing changed: the folder is not listed
                assert found[first].kind != "jupyter"
                # A runtime file for a port that already listens: the folder's mtime moves.
                os.utime(runtime, (1, 1))
                (runtime / "jpserver-1.json").write_text(json.dumps({"port": first, "token": "a"}))
                os.utime(runtime, (2, 2))
                found = await look(files, found)
                assert found[first].kind == "jupyter" and second in found
            finally:
                files.close()
                conn.close()

        run(main())


def test_a_new_port_makes_a_kept_session_list_the_runtime_folder(
    sshd: SshServer, tmp_path: Path
) -> None:
    """The folder's mtime is kept as it was (a file written in the same second as the
    last listing): a new listening port alone must bring the new server's file in."""
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    os.utime(runtime, (5, 5))

    async def main() -> None:
        conn = await connect(sshd)
        files = ClusterFiles(conn)
        try:
            found, _ = await discover(files, {}, runtime_dir=str(runtime))
            found, _ = await discover(files, found, runtime_dir=str(runtime))
            with http_server() as late:
                assert late not in found
                (runtime / "jpserver-2.json").write_text(json.dumps({"port": late, "token": "b"}))
                os.utime(runtime, (5, 5))
                found, _ = await discover(files, found, runtime_dir=str(runtime))
                assert found[late].kind == "jupyter"
            found, _ = await discover(files, found, runtime_dir=str(runtime))
            assert late not in found  # closed: the kept table handle reads it anew
        finally:
            files.close()
            conn.close()

    run(main())


def test_without_sftp_the_socket_table_comes_through_an_exec_channel(tmp_path: Path) -> None:
    no_sftp = SshServer(tmp_path / "sshd", sftp=False)
    no_sftp.start()
    try:
        with http_server() as plain:

            async def main() -> None:
                conn = await connect(no_sftp)
                try:
                    found, sockets = await discover(conn)
                    found = await probe_all(conn, found)
                finally:
                    conn.close()
                assert plain in sockets.ports and found[plain].kind == "http"

            run(main())
    finally:
        no_sftp.stop()


def test_a_tunnel_forwards_jupyter_by_itself_offers_the_rest_and_says_no_service(
    sshd: SshServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    monkeypatch.setattr(discover_module, "RUNTIME_DIR", str(runtime))
    with http_server() as notebook, titled_server() as titled, socket.socket() as nothing:
        nothing.bind(("127.0.0.1", 0))
        dead = nothing.getsockname()[1]  # bound, never listening: nothing serves there
        (runtime / "jpserver-1.json").write_text(
            json.dumps({"port": notebook, "token": "t0k", "base_url": "/"})
        )

        async def main() -> None:
            opts = fast_options(sshd, discover_interval=5)  # the shortest allowed
            t = make_tunnel(sshd, [f"0:127.0.0.1:{dead}"], tmp_path, options=opts)
            async with running(t):
                st = await t.wait_for(lambda st: any(s.port == notebook for s in st.services), 15)
                jupyter = next(s for s in st.services if s.port == notebook)
                assert jupyter.state == "forwarded" and jupyter.local_port is not None
                assert jupyter.url == f"http://localhost:{jupyter.local_port}/lab?token=t0k"
                assert HTTP_BODY in await http_get(jupyter.local_port)
                # Titles come from probes, 8 ports a look: this machine may listen on many.
                st = await t.wait_for(
                    lambda st: any(s.port == titled and s.title for s in st.services), 120
                )
                star = next(s for s in st.services if s.port == titled)
                assert (star.state, star.title, star.local_port) == (
                    "offered",
                    "STAR-CCM+ server",
                    None,
                )
                assert st.forwards[0].no_service  # the configured forward: nothing there
                await t.forward_port(titled)
                st = t.status()
                star = next(s for s in st.services if s.port == titled)
                assert star.state == "forwarded" and star.local_port is not None

                # A service that starts after the link is up, and one that stops.
                with socket.socket() as late:
                    late.bind(("127.0.0.1", 0))
                    late.listen()
                    t.look_now()
                    port = late.getsockname()[1]
                    await t.wait_for(lambda st: any(s.port == port for s in st.services), 15)
                t.look_now()
                await t.wait_for(lambda st: all(s.port != port for s in st.services), 15)

        run(main(), 170)
