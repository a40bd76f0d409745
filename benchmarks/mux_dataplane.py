"""What the speed goals would measure if OpenSSH carried the bytes: a design probe.

jobtunnel's engine moves every byte through asyncssh, in Python; the round trip and the
connection rate stay well short of ``ssh -L`` however its own code is trimmed (a bare
asyncssh ``forward_local_port`` measures the same). This script measures the other
design, side by side with ``ssh -L``, the daemon and a bare asyncssh ``forward_local_port``
on uvloop (the floor of the current design) in one run: a listener of our own (so ports stay put
and clients can be held, as now) hands each accepted client's socket to an OpenSSH
``ControlMaster`` with the mux protocol's ``MUX_C_NEW_STDIO_FWD`` (OpenSSH PROTOCOL.mux;
the socket goes over by SCM_RIGHTS), and from then on only ssh touches its bytes.

    .venv/bin/python benchmarks/mux_dataplane.py [--reps 3]

Not the product: no reconnects, host-key pins or jobtunnel keys here, and ControlMaster
does not exist in Windows' OpenSSH.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from benchmarks.peers import (
    SAME_CIPHER,
    Daemon,
    Services,
    SshPeer,
    free_port,
    kill_tree,
    start_sshd,
)
from benchmarks.probes import connections_per_s, echo_rtt_us, serves, throughput, wait_until

MUX_VERSION = 4
MUX_MSG_HELLO = 0x00000001
MUX_C_NEW_STDIO_FWD = 0x10000008
# Connected control sockets kept ready: the hello exchange is off the accept path.
READY_CONTROLS = 8


def _string(value: bytes) -> bytes:
    return struct.pack(">I", len(value)) + value


def _message(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


class MuxForwarder:
    """Accepts on ``port`` and passes each client to the master at ``control``."""

    def __init__(self, control: str, port: int, host: str, hostport: int) -> None:
        self.control = control
        self.port = port
        self.request = _message(
            struct.pack(">II", MUX_C_NEW_STDIO_FWD, 1)
            + _string(b"")
            + _string(host.encode())
            + struct.pack(">I", hostport)
        )
        self.ready: collections.deque[socket.socket] = collections.deque()

    def _control(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(self.control)
        sock.sendall(_message(struct.pack(">II", MUX_MSG_HELLO, MUX_VERSION)))
        return sock

    def _refill(self) -> None:
        while len(self.ready) < READY_CONTROLS:
            self.ready.append(self._control())

    def _hand_over(self, loop: asyncio.AbstractEventLoop, client: socket.socket) -> None:
        control = self.ready.popleft() if self.ready else self._control()
        control.sendall(self.request)
        # The master takes the session's stdin and stdout: the same socket twice.
        socket.send_fds(control, [b"\0"], [client.fileno()])
        socket.send_fds(control, [b"\0"], [client.fileno()])
        client.close()
        control.setblocking(False)

        def readable() -> None:
            # Replies and, when the session ends, EOF: the control socket goes with it.
            try:
                if control.recv(4096):
                    return
            except BlockingIOError:
                return
            except OSError:
                pass
            loop.remove_reader(control.fileno())
            control.close()

        loop.add_reader(control.fileno(), readable)
        loop.call_soon(self._refill)

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        listener = socket.create_server(("127.0.0.1", self.port), backlog=512)
        listener.setblocking(False)
        self._refill()
        print("ready", flush=True)
        while True:
            client, _ = await loop.sock_accept(listener)
            self._hand_over(loop, client)


def cpu_seconds(pids: list[int]) -> float:
    """Run time of every thread of ``pids`` (schedstat: nanoseconds, not clock ticks)."""
    total = 0
    for pid in pids:
        for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
            try:
                total += int(stat.read_text().split()[0])
            except (OSError, ValueError):
                continue
    return total / 1e9


async def asyncssh_forward(sshd_port: int, key: str, user: str, port: int, hostport: int) -> None:
    """asyncssh's own local forward, nothing of jobtunnel's: what the Python path costs."""
    import asyncssh

    conn = await asyncssh.connect(
        "127.0.0.1",
        sshd_port,
        username=user,
        client_keys=[key],
        known_hosts=None,
        encryption_algs=[SAME_CIPHER],
        config=None,
    )
    await conn.forward_local_port("127.0.0.1", port, "127.0.0.1", hostport)
    print("ready", flush=True)
    await conn.wait_closed()


def start_forwarder(*args: object) -> subprocess.Popen[str]:
    """This script in another process with ``args`` (--forward or --asyncssh)."""
    proc = subprocess.Popen(
        [sys.executable, __file__, *map(str, args)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        kill_tree(proc)
        raise RuntimeError(f"the forwarder {args} did not start")
    return proc


def measure(reps: int, trips: int, conns: int, stream_mb: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="mux-dataplane-"))
    with Services() as services:
        sshd = start_sshd(work / "sshd")
        echo, stream = services.ports["echo"], services.ports["stream"]
        peers: dict[str, tuple[int, int, list[int]]] = {}
        procs: list[SshPeer | Daemon | subprocess.Popen[str]] = []
        try:
            ports = (free_port(), free_port())
            plain = SshPeer(
                work / "ssh",
                sshd,
                [f"{ports[0]}:127.0.0.1:{echo}", f"{ports[1]}:127.0.0.1:{stream}"],
                cipher=SAME_CIPHER,
            )
            procs.append(plain)
            peers["ssh -L"] = (*ports, [plain.pid])
            control = work / "control"
            master = SshPeer(
                work / "master", sshd, [], cipher=SAME_CIPHER, extra=["-M", "-S", str(control)]
            )
            procs.append(master)
            wait_until(control.exists, "the ControlMaster socket")
            ports = (free_port(), free_port())
            forwarders = [start_forwarder("--forward", control, ports[0], echo)]
            forwarders.append(start_forwarder("--forward", control, ports[1], stream))
            procs += forwarders
            peers["mux"] = (*ports, [master.pid] + [f.pid for f in forwarders])
            ports = (free_port(), free_port())
            plain_asyncssh = [
                start_forwarder("--asyncssh", sshd.port, sshd.client_key, sshd.user, p, target)
                for p, target in zip(ports, (echo, stream), strict=True)
            ]
            procs += plain_asyncssh
            peers["asyncssh"] = (*ports, [f.pid for f in plain_asyncssh])
            ports = (free_port(), free_port())
            daemon = Daemon(
                work / "jobtunnel",
                sshd,
                [f"{ports[0]}:127.0.0.1:{echo}", f"{ports[1]}:127.0.0.1:{stream}"],
                {"ssh": {"ciphers": [SAME_CIPHER]}},
            )
            procs.append(daemon)
            daemon.drop_log(sshd.port)
            peers["jobtunnel"] = (*ports, [daemon.pid])
            for name, (port, _, _) in peers.items():
                wait_until(serves(port, "echo"), name)
            runs: dict[str, dict[str, list[float]]] = {
                p: collections.defaultdict(list) for p in peers
            }
            for rep in range(reps):
                order = list(peers) if rep % 2 == 0 else list(reversed(peers))
                for name in order:
                    port, sport, pids = peers[name]
                    r = runs[name]
                    c0 = cpu_seconds(pids)
                    r["round trip (µs)"].append(echo_rtt_us(port, trips))
                    c1 = cpu_seconds(pids)
                    r["connections per s"].append(connections_per_s(port, conns))
                    c2 = cpu_seconds(pids)
                    r["throughput (MB/s)"].append(throughput(sport, stream_mb * 1_000_000))
                    c3 = cpu_seconds(pids)
                    r["CPU-µs per round trip"].append((c1 - c0) / (trips + 50) * 1e6)
                    r["CPU-µs per connection"].append((c2 - c1) / conns * 1e6)
                    r["CPU-s per GB"].append((c3 - c2) / (stream_mb / 1000))
                print(f"rep {rep + 1}/{reps} done", file=sys.stderr, flush=True)
        finally:
            for proc in procs:
                proc.stop() if isinstance(proc, SshPeer | Daemon) else kill_tree(proc)
            sshd.stop()
    print(f"{time.strftime('%Y-%m-%d %H:%M')}, aes128-gcm both, median of {reps}")
    others = [p for p in peers if p != "ssh -L"]
    print("| measure | ssh -L | " + " | ".join(f"{p} | ratio" for p in others) + " |")
    print("| --- " * (2 + 2 * len(others)) + "|")
    for measure_name in runs["mux"]:
        ssh = statistics.median(runs["ssh -L"][measure_name])
        cells = [_figure(ssh)]
        for peer in others:
            value = statistics.median(runs[peer][measure_name])
            cells += [_figure(value), f"{value / ssh:.2f}"]
        print(f"| {measure_name} | " + " | ".join(cells) + " |")


def _figure(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--trips", type=int, default=3000)
    parser.add_argument("--conns", type=int, default=1000)
    parser.add_argument("--stream-mb", type=int, default=500)
    parser.add_argument("--forward", nargs=3, metavar=("CONTROL", "PORT", "HOSTPORT"))
    parser.add_argument(
        "--asyncssh", nargs=5, metavar=("SSHD_PORT", "KEY", "USER", "PORT", "HOSTPORT")
    )
    args = parser.parse_args()
    if args.forward or args.asyncssh:
        with contextlib.suppress(ImportError):
            import uvloop  # as the daemon's event_loop = "auto"

            uvloop.install()
    if args.forward:
        control, port, hostport = args.forward
        asyncio.run(MuxForwarder(control, int(port), "127.0.0.1", int(hostport)).serve())
        return 0
    if args.asyncssh:
        sshd_port, key, user, port, hostport = args.asyncssh
        asyncio.run(asyncssh_forward(int(sshd_port), key, user, int(port), int(hostport)))
        return 0
    measure(args.reps, args.trips, args.conns, args.stream_mb)
    return 0


if __name__ == "__main__":
    sys.exit(main())
