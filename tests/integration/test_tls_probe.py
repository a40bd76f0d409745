"""Which scheme to open a forward with, asked through the tunnel: a real Jupyter server
with a self-signed certificate (as Rescale's is, on 8888) answers the tunnel's
ClientHello as TLS, a plain HTTP server and an echo server do not, and a port where
nothing listens stays unknown until it does."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from jobtunnel.daemon.engine.options import TunnelStatus

from tests.helpers.asyncrun import run
from tests.helpers.certs import self_signed
from tests.helpers.deps import dependency_missing
from tests.helpers.services import echo_server, http_server
from tests.helpers.sshd import SshServer, free_port
from tests.helpers.tunnels import is_up, local_port, make_tunnel, running

pytestmark = [pytest.mark.sshd, pytest.mark.timeout(120)]

TOKEN = "5ec2e7"


@contextmanager
def jupyter_with_tls(tmp: Path) -> Iterator[int]:
    try:
        import jupyter_server  # noqa: F401
    except ImportError:
        dependency_missing("jupyter_server is not installed (the test extra has it)")
    cert, key = self_signed(tmp)
    port = free_port()
    (tmp / "nb").mkdir()
    log = (tmp / "jupyter.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "server", "--allow-root", "--no-browser",
         "--ServerApp.ip=127.0.0.1", f"--port={port}", f"--ServerApp.token={TOKEN}",
         f"--certfile={cert}", f"--keyfile={key}", f"--ServerApp.root_dir={tmp / 'nb'}"],
        stdout=log, stderr=subprocess.STDOUT, env={"JUPYTER_RUNTIME_DIR": str(tmp / "rt"),
        "HOME": str(tmp), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError((tmp / "jupyter.log").read_text(errors="replace"))
            time.sleep(0.2)
        yield port
    finally:
        proc.kill()
        proc.wait(10)
        log.close()


def tls_of(st: TunnelStatus) -> list[bool | None]:
    return [f.tls for f in st.forwards]


def test_the_tunnel_asks_each_forwards_service_whether_it_speaks_tls(
    sshd: SshServer, tmp_path: Path
) -> None:
    nothing = free_port()
    with jupyter_with_tls(tmp_path) as jupyter, http_server() as plain, echo_server() as echo:
        specs = [f"0:127.0.0.1:{p}" for p in (jupyter, plain, echo, nothing)]

        async def main() -> None:
            t = make_tunnel(sshd, specs, tmp_path)
            async with running(t):
                st = await t.wait_for(lambda st: is_up(st) and None not in tls_of(st)[:3], 20)
                # The echo server sends the hello back: not taken for a ServerHello.
                assert tls_of(st) == [True, False, False, None]
                port = local_port(t, 0)

                def fetch() -> tuple[int, bytes]:
                    unverified = ssl.create_default_context()
                    unverified.check_hostname = False
                    unverified.verify_mode = ssl.CERT_NONE
                    url = f"https://127.0.0.1:{port}/api/status?token={TOKEN}"
                    with urllib.request.urlopen(url, timeout=20, context=unverified) as answer:
                        return answer.status, answer.read()

                # What the scheme is for: https through the tunnel reaches Jupyter.
                status, body = await asyncio.to_thread(fetch)
                assert status == 200 and "started" in json.loads(body)

        run(main())
