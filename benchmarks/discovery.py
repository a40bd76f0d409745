"""Service discovery: how soon a service that starts on a cluster is forwarded (an
automatic kind) or offered, and what looking costs while nothing happens.

Against the suite's real sshd in a network namespace of its own (the cluster: its
listening sockets are its own, not this busy machine's), reached over a veth pair through
a relay that counts the bytes. VS Code's Remote-SSH, the one peer that
discovers ports, does it with a server of its own on the remote side; nothing comparable
runs here, so the figures stand alone, against their goals:

- a new service -> forwarded or offered: median <= one discovery interval + 1 s;
- idle cost with 20 clusters: <= 0.1 CPU-s per minute (bytes per minute printed too).

    python benchmarks/discovery.py            # 5 repeats at a 5 s interval; 20 tunnels idle 60 s
    python benchmarks/discovery.py --quick    # a harness check
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from jobtunnel.daemon.core.forward import parse_forward
from jobtunnel.daemon.engine.hostkeys import HostKeyStore
from jobtunnel.daemon.engine.tunnel import Tunnel

from tests.helpers.netns import Netns, namespace
from tests.helpers.sshd import SshServer
from tests.helpers.tunnels import fast_options, running


class CountingRelay:
    """A TCP relay in front of the sshd that counts the bytes of every connection."""

    def __init__(self, host: str, target: int) -> None:
        self.host = host
        self.target = target
        self.bytes = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.CancelledError):  # the run ending cancels it
            await self._relay(reader, writer)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self.host, self.target)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    self.bytes += len(data)
                    dst.write(data)
                    await dst.drain()
            except OSError:
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def close(self) -> None:
        if self._server is not None:
            self._server.close()


def tunnel(sshd: SshServer, host: str, port: int, tmp: Path, interval: float) -> Tunnel:
    return Tunnel(
        sshd.user,
        host,
        port,
        [parse_forward("0:127.0.0.1:9")],
        # The default keepalive (5 s), so that the idle figures are a user's.
        fast_options(sshd, discover_interval=interval, keepalive_interval=5.0),
        host_keys=HostKeyStore(tmp / "known_hosts"),
    )


LISTEN = "import socket, time; s = socket.create_server(('127.0.0.1', {port})); time.sleep(600)"


async def time_to_forward(
    ns: Netns, sshd: SshServer, tmp: Path, interval: float, repeats: int
) -> list[float]:
    """Seconds from a listener opening on the cluster to it being offered."""
    times = []
    async with running(tunnel(sshd, ns.ns_ip, sshd.port, tmp, interval)) as t:
        await asyncio.sleep(1.0)  # the first look is done
        for n in range(repeats):
            port = 20000 + n
            listener = subprocess.Popen(ns.wrap([sys.executable, "-c", LISTEN.format(port=port)]))
            try:
                started = time.monotonic()
                while not any(s.port == port for s in t.status().services):
                    if time.monotonic() - started > interval * 3 + 10:
                        raise TimeoutError(f"port {port} not found")
                    await asyncio.sleep(0.02)
                times.append(time.monotonic() - started)
            finally:
                listener.kill()
                listener.wait()
            await asyncio.sleep(interval * 0.37)  # start at another point of the interval
    return times


async def idle_cost(
    ns: Netns, sshd: SshServer, tmp: Path, clusters: int, seconds: float, interval: float
) -> tuple[float, float]:
    """CPU seconds and bytes per minute of this process with ``clusters`` tunnels idle."""
    relay = CountingRelay(ns.ns_ip, sshd.port)
    await relay.start()
    tunnels = [tunnel(sshd, "127.0.0.1", relay.port, tmp, interval) for _ in range(clusters)]
    try:
        for t in tunnels:
            await t.start()
        for t in tunnels:
            await t.wait_for(lambda st: st.state == "up", 30)
        await asyncio.sleep(2.0)  # first looks and logins done
        cpu, sent = time.process_time(), relay.bytes
        await asyncio.sleep(seconds)
        cpu, sent = time.process_time() - cpu, relay.bytes - sent
    finally:
        for t in tunnels:
            await t.end()
        relay.close()
    return cpu * 60 / seconds, sent * 60 / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a harness check: fewer, shorter")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    repeats, clusters, idle, interval = (2, 3, 10.0, 5.0) if args.quick else (5, 20, 60.0, 5.0)
    with tempfile.TemporaryDirectory() as tmp_name, namespace() as ns:
        tmp = Path(tmp_name)
        sshd = SshServer(tmp / "sshd", listen=ns.ns_ip, wrapper=ns.wrap())
        sshd.start()
        try:
            print(f"a new service at a {interval:g} s discovery interval, {repeats} repeats…")
            times = asyncio.run(time_to_forward(ns, sshd, tmp, interval, repeats))
            print(f"{clusters} tunnels idle for {idle:g} s, discovery off, then every 30 s…")
            base_cpu, base_bytes = asyncio.run(idle_cost(ns, sshd, tmp, clusters, idle, 0.0))
            all_cpu, all_bytes = asyncio.run(idle_cost(ns, sshd, tmp, clusters, idle, 30.0))
            # Discovery's own share: what it adds to idle tunnels (keepalives and all).
            cpu, per_minute = max(0.0, all_cpu - base_cpu), max(0.0, all_bytes - base_bytes)
        finally:
            sshd.stop()
    median = statistics.median(times)
    goal = interval + 1.0
    print()
    print(f"{'measure':44} {'jobtunnel':>12} {'goal':>10} {'ratio':>7}")
    print(f"{'new service -> offered, median (s)':44} {median:12.2f} {goal:10.2f} "
          f"{median / goal:7.2f}")  # fmt: skip
    print(f"{'idle, ' + str(clusters) + ' clusters (CPU-s/min)':44} {cpu:12.3f} {0.1:10.2f} "
          f"{cpu / 0.1:7.2f}")  # fmt: skip
    print(f"{'idle, ' + str(clusters) + ' clusters (bytes/min over SSH)':44} {per_minute:12.0f}")
    print(f"(idle tunnels without discovery: {base_cpu:.3f} CPU-s/min, {base_bytes:.0f} B/min;"
          f" with it: {all_cpu:.3f}, {all_bytes:.0f})")  # fmt: skip
    print(f"(each of {repeats}: {', '.join(f'{t:.2f}' for t in times)} s)")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"median_s": median, "times": times, "discovery_cpu_s_per_min": cpu,
                 "idle_cpu_s_per_min_without": base_cpu, "idle_cpu_s_per_min_with": all_cpu,
                 "discovery_bytes_per_min": per_minute, "clusters": clusters}
            )
        )  # fmt: skip


if __name__ == "__main__":
    main()
