"""Laptops move: jobtunnel and autossh through the same network faults, in one run.

Two network namespaces joined by a veth pair: a laptop, where both peers run side by side
(the jobtunnel daemon with its defaults; ``autossh -M 0`` with ServerAliveInterval 5 and
ServerAliveCountMax 2), and a cluster, with a real sshd and an HTTP server behind it. The
laptop's side of the link then goes down and comes back, its address changes (as when
Wi-Fi changes), its route is removed and restored. A client on the laptop asks each peer
every 100 ms, either throughout ("busy": requests are in flight when the network goes)
or from the moment it is back ("idle": nobody was using the tunnel). For each fault the
figures are the time from the network being back to the first request served through each
peer, and the requests that failed meanwhile (refused, reset or timed out; a request a
peer holds and then serves counts as served). Needs root (namespaces) and autossh.

    .venv/bin/python benchmarks/network_change.py              # 3 of each, ~6 minutes
    .venv/bin/python benchmarks/network_change.py --quick      # one of each: a harness check

Goal: jobtunnel's median <= 1 s after the network is back, for every fault kind.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.peers import AutosshPeer, Daemon, free_port, kill_tree
from benchmarks.probes import Prober, serves, wait_until
from benchmarks.tunnels import Metric, fmt, log, save
from tests.helpers.netns import FAULTS, Pair, inside, pair
from tests.helpers.sshd import SshServer

HERE = Path(__file__).resolve().parent
HTTP_PORT = 18080
PEERS = ("jobtunnel", "autossh")
USES = ("busy", "idle")
GOAL_MS = 1000.0
# Long enough for autossh's keepalive (5 s x 2) to fire, short of the held-client limit.
WAIT_S = 60.0


def _short(kind: str) -> str:
    return kind.split()[0]


class Bench:
    def __init__(self, net: Pair, workdir: Path, outage: float) -> None:
        self.net = net
        self.dir = workdir
        self.outage = outage
        self.metrics: dict[str, Metric] = {}
        self.moves = 2  # the laptop is .1; each address change takes the next number
        for kind in FAULTS:
            for use in USES:
                name = f"{_short(kind)}_{use}"
                self.metrics[f"{name}_back_ms"] = Metric(
                    f"{name}_back_ms",
                    "ms",
                    "lower",
                    "autossh",
                    f"<= {GOAL_MS:.0f} ms after the network is back",
                    lambda v: v["jobtunnel"] <= GOAL_MS,
                    {p: [] for p in PEERS},
                )
                self.metrics[f"{name}_failed"] = Metric(
                    f"{name}_failed",
                    "requests",
                    "lower",
                    "autossh",
                    "",
                    None,
                    {p: [] for p in PEERS},
                )

    def one(self, kind: str, use: str, ports: dict[str, int], rep: int) -> None:
        probers = {p: Prober(ports[p], interval=0.1, timeout=10) for p in PEERS}
        try:
            if use == "busy":
                for prober in probers.values():
                    prober.start()
                time.sleep(0.5)
            down = time.monotonic()
            self.moves += 1
            back = self.net.fault(kind, self.outage, self.moves)
            if use == "idle":
                for prober in probers.values():
                    prober.start()
            after = {p: probers[p].wait_ok_after(back, WAIT_S) for p in PEERS}
        finally:
            for prober in probers.values():
                prober.stop()
        name = f"{_short(kind)}_{use}"
        parts = []
        for p in PEERS:
            took = after[p]
            ms = took * 1000 if took is not None else float("inf")
            end = back + (took if took is not None else WAIT_S)
            failed, total = probers[p].failed_between(down, end)
            self.metrics[f"{name}_back_ms"].runs[p].append(ms)
            self.metrics[f"{name}_failed"].runs[p].append(failed)
            parts.append(f"{p} {fmt(ms)} ms, {failed}/{total} failed")
        log(f"{kind} ({use}) {rep}: " + "; ".join(parts))


def _check_tools() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "autossh", "ssh"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian: iproute2, autossh, openssh-client)"
    return None


def run(
    repeats: int, outage: float, workdir: Path, faults: tuple[str, ...] = FAULTS
) -> tuple[dict[str, Any], str]:
    """The figures, and the daemon's log (kept beside them: it says what each check saw)."""
    with ExitStack() as stack:
        net = stack.enter_context(pair())
        sshd = SshServer(workdir / "sshd", listen=net.server.ns_ip, wrapper=net.server.wrap())
        sshd.start(timeout=30)
        stack.callback(sshd.stop)
        http = subprocess.Popen(
            net.server.wrap(
                [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(HTTP_PORT)]
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        stack.callback(kill_tree, http)
        # From here on this thread, the probers' threads and the peers are on the laptop.
        stack.enter_context(inside(net.client))
        ports = {p: free_port() for p in PEERS}
        jt = Daemon(workdir / "jobtunnel", sshd, [f"{ports['jobtunnel']}:127.0.0.1:{HTTP_PORT}"])
        stack.callback(jt.stop)
        jt.drop_log(sshd.port)
        auto = AutosshPeer(
            workdir / "autossh", sshd, [f"{ports['autossh']}:127.0.0.1:{HTTP_PORT}"], 5
        )
        stack.callback(auto.stop)
        bench = Bench(net, workdir, outage)
        for rep in range(1, repeats + 1):
            for kind in faults:
                for use in USES:
                    for p in PEERS:
                        try:
                            wait_until(serves(ports[p]), f"{p} serving", 2 * WAIT_S)
                        except TimeoutError:
                            # autossh backs off after repeated failures: its figure
                            # for this fault then counts the wait.
                            log(f"{p} is not serving before '{kind}'; going on")
                    time.sleep(1)  # the last check's request closed: idle means idle
                    bench.one(kind, use, ports, rep)
        reconnects = jt.status()["endpoints"][0]["reconnects"]
        text = jt.text()
    metrics = {n: m.to_dict() for n, m in bench.metrics.items() if any(m.runs.values())}
    return {"metrics": metrics, "reconnects": reconnects}, text


def table(report: dict[str, Any]) -> str:
    lines = [
        f"network changes, {report['date']}: {report['repeats']} of each fault, outage "
        f"{report['outage_s']:g} s; load avg {report['loadavg'][0]:.2f}"
        + ("; QUICK (harness check, not figures)" if report["quick"] else ""),
        f"{'fault':<34}{'measure':>18}{'jobtunnel':>11}{'autossh':>9}{'ratio':>8}  goal",
    ]
    for kind in FAULTS:
        for use in USES:
            for what, label in (("back_ms", "back after (ms)"), ("failed", "failed requests")):
                d = report["metrics"].get(f"{_short(kind)}_{use}_{what}")
                if d is None:
                    continue  # not run (--fault)
                v = d["values"]
                met = d["goal_met"]
                verdict = "" if met is None else ("  met" if met else "  NOT met")
                first = f"{kind} ({use})" if what == "back_ms" else ""
                lines.append(
                    f"{first:<34}{label:>18}{fmt(v.get('jobtunnel')):>11}"
                    f"{fmt(v.get('autossh')):>9}{fmt(d['ratio']):>8}  {d['goal']}{verdict}"
                )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], epilog="Run as root: it makes network namespaces."
    )
    parser.add_argument("--repeats", type=int, default=3, help="faults of each kind (default 3)")
    parser.add_argument("--outage", type=float, default=3.0, help="seconds down (default 3)")
    parser.add_argument("--quick", action="store_true", help="one of each fault: a harness check")
    parser.add_argument(
        "--fault",
        action="append",
        choices=[_short(k) for k in FAULTS],
        help="only this fault (repeatable; default: all)",
    )
    parser.add_argument("--json", type=Path, help="results file (benchmarks/results/<date>.json)")
    args = parser.parse_args(argv)
    if (why := _check_tools()) is not None:
        print(f"network_change: cannot run here: {why}", file=sys.stderr)
        return 2
    repeats = 1 if args.quick else args.repeats
    started = datetime.now(UTC)
    workdir = Path(tempfile.mkdtemp(prefix="jobtunnel-netchange-"))
    try:
        faults = tuple(k for k in FAULTS if not args.fault or _short(k) in args.fault)
        results, daemon_log = run(repeats, args.outage, workdir, faults)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report = {
        "date": f"{started:%Y-%m-%d %H:%M} UTC",
        "quick": args.quick,
        "repeats": repeats,
        "outage_s": args.outage,
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        **results,
    }
    out = args.json or HERE / "results" / f"network-change-{started:%Y-%m-%dT%H%M%S}.json"
    save(report, out)
    out.with_suffix(".daemon.log").write_text(daemon_log)
    print(table(report))
    print(f"jobtunnel reconnects in all: {results['reconnects']}; results: {out} (and .daemon.log)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
