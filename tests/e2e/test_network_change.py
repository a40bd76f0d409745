"""A laptop's network changes under the daemon: the daemon in a namespace of its own (the
laptop), a real sshd and services in another (the cluster), one veth link between them.
The laptop's side of the link goes down and up, its address changes, its route goes and
comes back: each time the tunnel serves again soon after, long before its keepalive
(30 s x 3) or its backoff would have noticed, and status says the network changed. An
unrelated change leaves a healthy link, and a connection through it, alone."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.daemonproc import Daemon, Env, make_env, wait_for
from tests.helpers.netns import FAULTS, Netns, Pair, pair
from tests.helpers.sshd import SshServer

pytestmark = [pytest.mark.sshd, pytest.mark.timeout(240)]

HTTP_PORT, ECHO_PORT = 18080, 18007
ECHO = (
    "import socketserver\n"
    "class H(socketserver.BaseRequestHandler):\n"
    "    def handle(self):\n"
    "        while (b := self.request.recv(4096)):\n"
    "            self.request.sendall(b)\n"
    "socketserver.ThreadingTCPServer.allow_reuse_address = True\n"
    f"socketserver.ThreadingTCPServer(('127.0.0.1', {ECHO_PORT}), H).serve_forever()\n"
)
# A client that keeps one connection: each line on stdin is sent and its echo printed.
HOLDER = (
    "import socket, sys\n"
    "s = socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=10)\n"
    "for line in sys.stdin:\n"
    "    s.sendall(line.encode())\n"
    "    print(s.recv(4096).decode().strip() or 'closed', flush=True)\n"
)
FETCH = (
    "import sys, urllib.request\n"
    "urllib.request.urlopen(f'http://127.0.0.1:{sys.argv[1]}/', timeout=2).read()\n"
)


@dataclass
class Laptop:
    net: Pair
    env: Env
    daemon: Daemon

    def endpoint(self) -> dict[str, Any]:
        """The one endpoint ({} until the daemon has read the log)."""
        eps = self.env.status()["endpoints"]
        return eps[0] if eps else {}

    def local_port(self, remote: int) -> int:
        fwd = next(f for f in self.endpoint()["forwards"] if f["remote_port"] == remote)
        return int(fwd["local_port"])

    def idle(self) -> bool:
        """No client is through the tunnel (the last request's may still be closing)."""
        ep = self.endpoint()
        return ep["state"] == "up" and not any(f["clients"] for f in ep["forwards"])

    def checked_since(self, wall: float, what: str) -> dict[str, Any]:
        """The link's last check, once it is one made at or after ``wall`` (time.time()):
        an earlier one (IPv6's address settling after the namespace came up) is stale."""
        found: dict[str, Any] = wait_for(
            lambda: (c := self.endpoint().get("checked")) and c["at"] >= wall and c, what, 15
        )
        return found

    def served(self) -> bool:
        """One HTTP request through the tunnel, made on the laptop."""
        port = self.local_port(HTTP_PORT)
        return self.net.client.run(sys.executable, "-c", FETCH, str(port)).returncode == 0


def _serve(ns: Netns, *argv: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ns.wrap([sys.executable, *argv]), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


@contextmanager
def laptop(tmp: Path) -> Iterator[Laptop]:
    with pair() as net:
        sshd = SshServer(tmp / "sshd", listen=net.server.ns_ip, wrapper=net.server.wrap())
        sshd.start(timeout=30)
        servers = [
            _serve(net.server, "-m", "http.server", "--bind", "127.0.0.1", str(HTTP_PORT)),
            _serve(net.server, "-c", ECHO),
        ]
        env = make_env(tmp / "user", sshd, HTTP_PORT)
        text = env.config_text([str(HTTP_PORT), str(ECHO_PORT)])
        # Only a network notice can bring the link back soon: the keepalive takes 90 s,
        # and the backoff after the first failure already waits up to 20 s.
        text = text.replace("keepalive_interval = 1", "keepalive_interval = 30")
        text = text.replace("initial_delay = 0.1", "initial_delay = 20")
        text = text.replace("max_delay = 1", "max_delay = 60")
        env.config.write_text(text)
        daemon = Daemon(env, wrapper=net.client.wrap())
        try:
            daemon.wait_ready()
            env.logs.mkdir(exist_ok=True)
            (env.logs / "job.log").write_text(
                f"ssh -p {sshd.port} {sshd.user}@{net.server.ns_ip}\n"
            )
            box = Laptop(net, env, daemon)
            wait_for(lambda: box.endpoint().get("state") == "up", "the tunnel up", 30)
            wait_for(box.served, "a request through the tunnel", 30)
            yield box
        finally:
            daemon.kill()
            for proc in servers:
                proc.kill()
                proc.wait(10)
            sshd.stop()


@pytest.mark.parametrize("fault", FAULTS)
def test_a_tunnel_serves_again_soon_after_the_network_comes_back(
    tmp_path: Path, fault: str
) -> None:
    with laptop(tmp_path) as box:
        wait_for(box.idle, "the last request closed")
        back = box.net.fault(fault, outage=3, new_host=3)
        back_wall = time.time()
        # Generous: within the keepalive's 90 s or the 20 s backoff this would be luck.
        wait_for(box.served, f"a request served after '{fault}'", 15)
        took = time.monotonic() - back
        # The check made once the network was back (a link fault has one at link-down too).
        checked = box.checked_since(back_wall - 0.1, "the check after the network came back")
        ep = box.endpoint()
        assert ep["state"] == "up"
        assert checked["reason"] == "network changed", checked
        if fault == "address changed":
            # The old address is gone: the link was replaced, with no backoff.
            assert ep["reconnects"] >= 1, ep
        else:
            # An idle link with no route is kept, like OpenSSH's own connection: once
            # the route is back the same connection answers, nothing reconnects.
            assert checked["outcome"].startswith("answered"), checked
            assert ep["reconnects"] == 0, ep
        assert took < 15
        log = box.daemon.text()
        assert "network changed: checking 1 links" in log, log


def test_a_route_that_now_leaves_from_another_address_replaces_the_link(
    tmp_path: Path,
) -> None:
    """A VPN or another interface takes the route to the cluster while the old address
    stays: the old connection's packets would leave with the wrong source."""
    with laptop(tmp_path) as box:
        wait_for(box.idle, "the last request closed")
        net = box.net
        vpn = f"{net.prefix}.50"
        net.ip("addr", "add", f"{vpn}/32", "dev", net.client_if)
        net.ip("route", "add", f"{net.server.ns_ip}/32", "dev", net.client_if, "src", vpn)
        checked = wait_for(
            lambda: (c := box.endpoint()["checked"]) and "leaves from" in c["outcome"] and c,
            "a check that saw the route move",
            15,
        )
        assert checked["outcome"].startswith(f"the route to the cluster now leaves from {vpn}")
        wait_for(lambda: box.endpoint()["reconnects"] >= 1 and box.served(), "served anew", 15)


@contextmanager
def holding(box: Laptop) -> Iterator[Callable[[str], str]]:
    """A connection through the tunnel to the cluster's echo server, kept open; the
    function sends a word and returns what came back."""
    holder = subprocess.Popen(
        box.net.client.wrap([sys.executable, "-c", HOLDER, str(box.local_port(ECHO_PORT))]),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdin is not None and holder.stdout is not None
    stdin, stdout = holder.stdin, holder.stdout

    def echo(word: str) -> str:
        stdin.write(word + "\n")
        stdin.flush()
        return stdout.readline().strip()

    try:
        assert echo("before") == "before"
        yield echo
    finally:
        holder.kill()
        holder.wait(10)


def test_a_healthy_link_and_its_clients_outlive_an_unrelated_change(tmp_path: Path) -> None:
    with laptop(tmp_path) as box, holding(box) as echo:
        # A new interface on the laptop (a VPN's, a dock's; a veth pair, since this
        # kernel has no dummy links): the network changed, not the link's path.
        before = time.time()
        box.net.ip("link", "add", "jtv0", "type", "veth", "peer", "name", "jtv1")
        box.net.ip("addr", "add", "10.233.0.1/24", "dev", "jtv0")
        box.net.ip("link", "set", "jtv0", "up")
        box.net.ip("link", "set", "jtv1", "up")
        checked = box.checked_since(before, "a check after the change")
        assert checked["reason"] == "network changed"
        assert checked["outcome"].startswith("answered"), checked
        assert echo("after") == "after"
        assert box.endpoint()["reconnects"] == 0


def test_a_link_with_a_client_is_kept_through_a_short_outage(tmp_path: Path) -> None:
    with laptop(tmp_path) as box, holding(box) as echo:
        down = time.time()
        box.net.link(False)
        kept = box.checked_since(down, "a check at link-down")
        assert kept["outcome"].startswith("no route to the cluster now; kept"), kept
        time.sleep(2)
        box.net.link(True)
        # TCP retransmits what it holds once the route is back: the same connection.
        assert echo("after") == "after"
        assert box.endpoint()["reconnects"] == 0
