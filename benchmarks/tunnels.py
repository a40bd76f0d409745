"""jobtunnel side by side with OpenSSH ``ssh -N -L`` and autossh, in one run.

Starts a throw-away ``sshd`` on loopback and echo/HTTP/stream services behind it, runs the
peers one after another against the same server (order alternating between repetitions),
and prints medians and ratios to the peer from the same run; writes everything as JSON.

    .venv/bin/python benchmarks/tunnels.py            # full run, about 10 minutes
    .venv/bin/python benchmarks/tunnels.py --quick    # harness check, about a minute
    .venv/bin/python benchmarks/tunnels.py --only throughput,rtt --json out.json

Machines are shared and noisy: quote the ratios (same run), not the absolute figures.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.peers import (
    MAX_PORTS_PER_SSHD,
    SAME_CIPHER,
    AutosshPeer,
    Daemon,
    Services,
    SshPeer,
    free_port,
    start_sshd,
)
from benchmarks.probes import (
    Prober,
    ProcSample,
    connections_per_s,
    echo_rtt_us,
    http_ok,
    log_grew_with,
    proc_sample,
    serves,
    thread_switches,
    throughput,
    wait_until,
)

HERE = Path(__file__).resolve().parent
PHASES = ("throughput", "log", "recovery", "silent", "idle", "detect")


@dataclass(frozen=True)
class Params:
    reps: int  # throughput / round trip / connection-rate repetitions
    stream_mb: int
    rtt_trips: int
    conns: int
    log_reps: int
    recovery_reps: int
    outage_s: float
    silent_reps: int
    keepalive_s: int  # silent failure: both sides' keepalive interval (count max 2)
    idle_tunnels: int
    idle_window_s: float
    detect_quick: bool


FULL = Params(
    reps=5,
    stream_mb=512,
    rtt_trips=2000,
    conns=300,
    log_reps=7,
    recovery_reps=5,
    outage_s=3.0,
    silent_reps=3,
    keepalive_s=5,
    idle_tunnels=20,
    idle_window_s=60.0,
    detect_quick=False,
)
# Every metric for every peer, small: checks that the harness works, not the speed.
QUICK = Params(
    reps=1,
    stream_mb=16,
    rtt_trips=100,
    conns=20,
    log_reps=1,
    recovery_reps=1,
    outage_s=1.0,
    silent_reps=1,
    keepalive_s=1,
    idle_tunnels=3,
    idle_window_s=2.0,
    detect_quick=True,
)


@dataclass
class Metric:
    name: str
    unit: str
    better: str  # "higher" or "lower"
    reference: str  # the peer the ratio is taken against ("" for none)
    goal: str
    check: Callable[[dict[str, float]], bool] | None
    runs: dict[str, list[float]]

    def values(self) -> dict[str, float]:
        return {peer: statistics.median(v) for peer, v in self.runs.items() if v}

    def ratio(self) -> float | None:
        v = self.values()
        if not self.reference or "jobtunnel" not in v or not v.get(self.reference):
            return None
        return v["jobtunnel"] / v[self.reference]

    def met(self) -> bool | None:
        v = self.values()
        if self.check is None or "jobtunnel" not in v:
            return None
        return self.check(v)

    def to_dict(self) -> dict[str, Any]:
        ratio = self.ratio()
        return {
            "unit": self.unit,
            "better": self.better,
            "reference": self.reference,
            "goal": self.goal,
            "values": {k: round(x, 3) for k, x in self.values().items()},
            "runs": {k: [round(x, 3) for x in v] for k, v in self.runs.items()},
            "ratio": round(ratio, 3) if ratio is not None else None,
            "goal_met": self.met(),
        }


class Run:
    def __init__(self, params: Params, workdir: Path) -> None:
        self.p = params
        self.dir = workdir
        self.metrics: dict[str, Metric] = {}
        self.extra: dict[str, Any] = {}
        self._n = 0

    def home(self, what: str) -> Path:
        self._n += 1
        path = self.dir / f"{self._n:03d}-{what}"
        path.mkdir(parents=True)
        return path

    def metric(
        self,
        name: str,
        unit: str,
        better: str,
        peers: tuple[str, ...],
        goal: str = "",
        check: Callable[[dict[str, float]], bool] | None = None,
    ) -> Metric:
        reference = peers[1] if len(peers) > 1 else ""
        m = Metric(name, unit, better, reference, goal, check, {p: [] for p in peers})
        self.metrics[name] = m
        return m

    # -- 1, 2: throughput, round trip, connection rate ------------------------------

    def transfer(self, services: Services) -> None:
        p = self.p
        size = p.stream_mb * 1_000_000
        same = self.metric(
            "throughput_same_cipher_mb_s",
            "MB/s",
            "higher",
            ("jobtunnel", "ssh"),
            ">= 0.8x ssh -L (aes128-gcm both)",
            lambda v: v["jobtunnel"] >= 0.8 * v["ssh"],
        )
        default = self.metric(
            "throughput_default_cipher_mb_s", "MB/s", "higher", ("jobtunnel", "ssh")
        )
        rtt = self.metric(
            "echo_rtt_us",
            "µs",
            "lower",
            ("jobtunnel", "ssh"),
            "<= 1.1x ssh -L",
            lambda v: v["jobtunnel"] <= 1.1 * v["ssh"],
        )
        cps = self.metric(
            "connections_per_s",
            "conn/s",
            "higher",
            ("jobtunnel", "ssh"),
            ">= 0.9x ssh -L",
            lambda v: v["jobtunnel"] >= 0.9 * v["ssh"],
        )
        rtt_default = self.metric("echo_rtt_default_cipher_us", "µs", "lower", ("jobtunnel", "ssh"))
        cps_default = self.metric(
            "connections_per_s_default_cipher", "conn/s", "higher", ("jobtunnel", "ssh")
        )
        # CPU the peer process spent per unit of work: far steadier than wall-clock
        # figures on a loaded machine, and what an engine change moves.
        cpu_gb = self.metric("transfer_cpu_s_per_gb", "CPU-s/GB", "lower", ("jobtunnel", "ssh"))
        cpu_trip = self.metric("echo_cpu_us_per_trip", "CPU-µs", "lower", ("jobtunnel", "ssh"))
        cpu_conn = self.metric("connect_cpu_us_per_conn", "CPU-µs", "lower", ("jobtunnel", "ssh"))
        stream, echo = services.ports["stream"], services.ports["echo"]
        for cipher, tput, rt, cp in (
            (SAME_CIPHER, same, rtt, cps),
            (None, default, rtt_default, cps_default),
        ):
            with ExitStack() as stack:
                sshd = start_sshd(self.home("sshd"))
                stack.callback(sshd.stop)
                ports: dict[str, tuple[int, int]] = {}
                jt_ports = (free_port(), free_port())
                settings = {"ssh": {"ciphers": [cipher]}} if cipher else {}
                jt = stack.enter_context(
                    Daemon(
                        self.home("jobtunnel"),
                        sshd,
                        [
                            f"{jt_ports[0]}:127.0.0.1:{stream}",
                            f"{jt_ports[1]}:127.0.0.1:{echo}",
                        ],
                        settings,
                    )
                )
                jt.drop_log(sshd.port)
                ports["jobtunnel"] = jt_ports
                ssh_ports = (free_port(), free_port())
                ssh = stack.enter_context(
                    SshPeer(
                        self.home("ssh"),
                        sshd,
                        [
                            f"{ssh_ports[0]}:127.0.0.1:{stream}",
                            f"{ssh_ports[1]}:127.0.0.1:{echo}",
                        ],
                        cipher=cipher,
                    )
                )
                ports["ssh"] = ssh_ports
                pids = {"jobtunnel": jt.pid, "ssh": ssh.pid}
                for peer, (_, e) in ports.items():
                    wait_until(serves(e, "echo"), f"{peer}'s tunnel")
                label = cipher or "default"
                for rep in range(p.reps):
                    order = list(ports) if rep % 2 == 0 else list(reversed(ports))
                    for peer in order:
                        s, e = ports[peer]
                        throughput(s, size // 8)  # warm-up
                        c0 = proc_sample(pids[peer]).cpu_s
                        tput.runs[peer].append(throughput(s, size))
                        c1 = proc_sample(pids[peer]).cpu_s
                        rt.runs[peer].append(echo_rtt_us(e, p.rtt_trips))
                        c2 = proc_sample(pids[peer]).cpu_s
                        cp.runs[peer].append(connections_per_s(e, p.conns))
                        c3 = proc_sample(pids[peer]).cpu_s
                        if cipher:
                            cpu_gb.runs[peer].append((c1 - c0) / (size / 1e9))
                            cpu_trip.runs[peer].append((c2 - c1) / (p.rtt_trips + 50) * 1e6)
                            cpu_conn.runs[peer].append((c3 - c2) / p.conns * 1e6)
                    log(
                        f"transfer {label} rep {rep + 1}/{p.reps}: "
                        + ", ".join(
                            f"{peer} {tput.runs[peer][-1]:.0f} MB/s "
                            f"{rt.runs[peer][-1]:.0f} µs {cp.runs[peer][-1]:.0f} conn/s"
                            for peer in ports
                        )
                    )

    # -- 3: job log -> first request through its tunnel ----------------------------

    def log_to_tunnel(self, services: Services) -> None:
        m = self.metric(
            "log_to_tunnel_ms",
            "ms",
            "lower",
            ("jobtunnel",),
            "median <= 300 ms",
            lambda v: v["jobtunnel"] <= 300,
        )
        with ExitStack() as stack:
            sshd = start_sshd(self.home("sshd"))
            stack.callback(sshd.stop)
            for rep in range(self.p.log_reps):
                port = free_port()
                with Daemon(
                    self.home("jobtunnel"),
                    sshd,
                    [f"{port}:127.0.0.1:{services.ports['http']}"],
                ) as jt:
                    jt.drop_log(sshd.port)
                    start = time.monotonic()
                    deadline = start + 30
                    while http_ok(port, 10) != "ok":
                        if time.monotonic() > deadline:
                            raise TimeoutError(f"no tunnel 30 s after the log:\n{jt.text()}")
                        time.sleep(0.002)
                    m.runs["jobtunnel"].append((time.monotonic() - start) * 1000)
                log(
                    f"log -> tunnel rep {rep + 1}/{self.p.log_reps}: "
                    f"{m.runs['jobtunnel'][-1]:.0f} ms"
                )

    # -- 4: server stopped and restarted --------------------------------------------

    @contextmanager
    def _peer(self, which: str, sshd: Any, http: int, keepalive: int = 5) -> Iterator[Any]:
        port = free_port()
        spec = [f"{port}:127.0.0.1:{http}"]
        peer: Daemon | AutosshPeer
        if which == "jobtunnel":
            settings = {"ssh": {"keepalive_interval": keepalive}} if keepalive != 5 else {}
            peer = Daemon(self.home("jobtunnel"), sshd, spec, settings)
            peer.drop_log(sshd.port)
        else:
            peer = AutosshPeer(self.home("autossh"), sshd, spec, alive_interval=keepalive)
        try:
            wait_until(serves(port), f"{which}'s tunnel")
            yield peer, port
        finally:
            peer.stop()

    def recovery(self, services: Services) -> None:
        peers = ("jobtunnel", "autossh")
        rec = self.metric(
            "recovery_ms",
            "ms",
            "lower",
            peers,
            "median <= 1000 ms after sshd is back",
            lambda v: v["jobtunnel"] <= 1000,
        )
        refused = self.metric(
            "refused_during_outage",
            "connections",
            "lower",
            peers,
            "0 (outage < hold time)",
            lambda v: v["jobtunnel"] == 0,
        )
        attempted = self.metric("requests_during_outage", "connections", "lower", peers)
        with ExitStack() as stack:
            sshd = start_sshd(self.home("sshd"))
            stack.callback(sshd.stop)
            for rep in range(self.p.recovery_reps):
                order = peers if rep % 2 == 0 else tuple(reversed(peers))
                for which in order:
                    with self._peer(which, sshd, services.ports["http"]) as (_, port):
                        prober = Prober(port, interval=0.1, timeout=40)
                        prober.start()
                        try:
                            time.sleep(0.3)
                            down = time.monotonic()
                            sshd.stop()
                            time.sleep(self.p.outage_s)
                            sshd.start()
                            up = time.monotonic()
                            after = prober.wait_ok_after(up, 40)
                        finally:
                            prober.stop()
                        failed, total = prober.failed_between(down, up)
                    rec.runs[which].append(after * 1000 if after is not None else float("inf"))
                    refused.runs[which].append(failed)
                    attempted.runs[which].append(total)
                    log(
                        f"recovery rep {rep + 1}/{self.p.recovery_reps} {which}: "
                        f"{rec.runs[which][-1]:.0f} ms after restart, "
                        f"{failed}/{total} requests failed during the outage"
                    )

    # -- 5: server session frozen (SIGSTOP) -----------------------------------------

    @staticmethod
    def _loss_seen(peer: Daemon | AutosshPeer) -> Callable[[], bool]:
        """Whether the peer has noticed its connection is gone: the daemon logs it;
        autossh's ssh child exits."""
        if isinstance(peer, Daemon):
            path, offset = peer.log_path, peer.log_path.stat().st_size
            return lambda: log_grew_with(path, "connection lost", offset)
        old = peer.ssh_pid()
        return lambda: peer.ssh_pid() != old

    def silent_failure(self, services: Services) -> None:
        peers = ("jobtunnel", "autossh")
        noticed = self.metric(
            "silent_failure_noticed_s",
            "s",
            "lower",
            peers,
            "<= 15 s",
            lambda v: v["jobtunnel"] <= 15,
        )
        back = self.metric("silent_failure_reconnected_s", "s", "lower", peers)
        ka = self.p.keepalive_s
        with ExitStack() as stack:
            sshd = start_sshd(self.home("sshd"))
            stack.callback(sshd.stop)
            for rep in range(self.p.silent_reps):
                order = peers if rep % 2 == 0 else tuple(reversed(peers))
                for which in order:
                    with self._peer(which, sshd, services.ports["http"], ka) as (peer, port):
                        lost = self._loss_seen(peer)

                        prober = Prober(port, interval=0.25, timeout=60)
                        frozen = time.monotonic()
                        sshd.freeze_sessions()
                        prober.start()
                        try:
                            seen = wait_until(lost, f"{which} to notice", 60)
                            again = prober.wait_ok_after(frozen, 60)
                        finally:
                            sshd.thaw_sessions()
                            prober.stop()
                    noticed.runs[which].append(seen)
                    back.runs[which].append(again if again is not None else float("inf"))
                    log(
                        f"silent failure rep {rep + 1}/{self.p.silent_reps} {which}: noticed "
                        f"{seen:.1f} s, serving again {back.runs[which][-1]:.1f} s after freeze"
                    )
                    sshd.restart()  # the frozen sessions' leftovers go

    # -- 6: idle cost --------------------------------------------------------------

    def idle(self, services: Services) -> None:
        peers = ("jobtunnel", "ssh")
        n = self.p.idle_tunnels
        cpu = self.metric(
            "idle_cpu_s_per_min",
            "CPU-s/min",
            "lower",
            peers,
            f"<= 0.5 with {n} tunnels",
            lambda v: v["jobtunnel"] <= 0.5,
        )
        rss = self.metric(
            "idle_peak_rss_mb",
            "MB",
            "lower",
            peers,
            "<= 80 MB",
            lambda v: v["jobtunnel"] <= 80,
        )
        # "No polling loop faster than once a second": the event loop thread may wake at
        # most once a second per tunnel (keepalives, probes and their answers), every
        # other thread at most once a second.
        by_thread: dict[str, float] = {}

        def quiet(v: dict[str, float]) -> bool:
            loop_thread = max(by_thread.values(), default=0.0)
            helpers = sorted(by_thread.values())[:-1]
            return loop_thread <= n and all(w <= 1.05 for w in helpers)

        wake = self.metric(
            "idle_wakeups_per_s",
            "/s",
            "lower",
            peers,
            "loop <= 1/s per tunnel, other threads <= 1/s",
            quiet,
        )
        http = services.ports["http"]
        with ExitStack() as stack:
            # Several servers (sshd listens on at most 16 sockets), one client key.
            sshd = start_sshd(self.home("sshd"), extra_ports=min(n, MAX_PORTS_PER_SSHD) - 1)
            stack.callback(sshd.stop)
            ports = list(sshd.ports)
            while len(ports) < n:
                more = min(n - len(ports), MAX_PORTS_PER_SSHD)
                other = start_sshd(self.home("sshd"), extra_ports=more - 1, also_trust=sshd)
                stack.callback(other.stop)
                ports += other.ports
            jt = stack.enter_context(
                Daemon(self.home("jobtunnel"), sshd, [f"{free_port()}:127.0.0.1:{http}"])
            )
            for port in ports:
                jt.drop_log(port)
            ssh_peers: list[SshPeer] = []
            for port in ports:
                local = free_port()
                peer = stack.enter_context(
                    SshPeer(self.home("ssh"), sshd, [f"{local}:127.0.0.1:{http}"], port=port)
                )
                ssh_peers.append(peer)
                try:
                    wait_until(serves(local), "ssh -L")
                except TimeoutError:
                    raise TimeoutError(
                        f"ssh -L {local} to sshd port {port}: exit {peer.proc.poll()}, "
                        f"{peer.text()!r}; sshd log:\n{sshd.log_text()[-3000:]}"
                    ) from None
            wait_until(lambda: len(jt.up_endpoints()) == n, f"{n} jobtunnel tunnels", 60)
            for ep in jt.up_endpoints():
                local = ep["forwards"][0]["local_port"]
                wait_until(serves(local), "a jobtunnel forward")
            time.sleep(2)  # settle
            window = self.p.idle_window_s
            jt0 = proc_sample(jt.pid)
            jt_threads0 = thread_switches(jt.pid)
            ssh0 = [proc_sample(s.pid) for s in ssh_peers]
            time.sleep(window)
            jt1 = proc_sample(jt.pid)
            jt_threads1 = thread_switches(jt.pid)
            ssh1 = [proc_sample(s.pid) for s in ssh_peers]

            def add(samples: list[ProcSample]) -> ProcSample:
                return ProcSample(
                    sum(s.cpu_s for s in samples),
                    sum(s.switches for s in samples),
                    sum(s.rss_mb for s in samples),
                    sum(s.hwm_mb for s in samples),
                )

            for name, a, b in (("jobtunnel", jt0, jt1), ("ssh", add(ssh0), add(ssh1))):
                cpu.runs[name].append((b.cpu_s - a.cpu_s) / window * 60)
                rss.runs[name].append(b.hwm_mb)
                wake.runs[name].append((b.switches - a.switches) / window)
            by_thread.update(
                {k: round((v - jt_threads0.get(k, 0)) / window, 2) for k, v in jt_threads1.items()}
            )
            self.extra["idle_jobtunnel_wakeups_per_s_by_thread"] = by_thread
            self.extra["idle_tunnels"] = n
            log(
                f"idle {n} tunnels over {window:.0f} s: "
                + ", ".join(
                    f"{p} {cpu.runs[p][-1]:.2f} CPU-s/min {rss.runs[p][-1]:.0f} MB "
                    f"{wake.runs[p][-1]:.1f}/s"
                    for p in peers
                )
            )

    # -- 7: detection --------------------------------------------------------------

    def detect(self) -> None:
        out = self.dir / "detect.json"
        argv = [sys.executable, str(HERE / "detect_throughput.py"), "--dir", str(self.dir)]
        argv += ["--quick"] if self.p.detect_quick else ["--size-mb", "1024"]
        subprocess.run([*argv, "--json", str(out)], check=True, timeout=900)
        cases = {r["case"]: r for r in json.loads(out.read_text())["results"]}
        plain = cases["no endpoint"]
        speed = self.metric(
            "detect_mb_s",
            "MB/s",
            "higher",
            ("jobtunnel", "grep"),
            ">= 300 MB/s (endpoint-free log)",
            lambda v: v["jobtunnel"] >= 300,
        )
        speed.runs["jobtunnel"].append(plain["mb_per_s"])
        speed.runs["grep"].append(plain["grep_mb_per_s"])
        mem = self.metric(
            "detect_peak_rss_mb",
            "MB",
            "lower",
            ("jobtunnel",),
            "flat: <= 64 MB whatever the log size",
            lambda v: v["jobtunnel"] <= 64,
        )
        mem.runs["jobtunnel"].append(plain["peak_rss_mb"])
        self.extra["detect"] = list(cases.values())


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.2f}] {text}", file=sys.stderr)


def fmt(x: float | None) -> str:
    if x is None:
        return "-"
    if x == float("inf"):
        return "never"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def table(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"jobtunnel vs peers, {report['date']}, {m['node']} ({m['cpus']} CPUs, "
        f"{m['system']}), Python {m['python']}, {report['event_loop']}; "
        f"load avg {report['loadavg_start'][0]:.2f} -> {report['loadavg_end'][0]:.2f}"
        + ("; QUICK (harness check, not figures)" if report["quick"] else ""),
        f"{'metric':<34}{'unit':>10}{'jobtunnel':>11}{'peer':>9}{'peer val':>10}{'ratio':>8}  goal",
    ]
    for name, d in report["metrics"].items():
        v = d["values"]
        ref = d["reference"]
        met = d["goal_met"]
        verdict = "" if met is None else ("  met" if met else "  NOT met")
        lines.append(
            f"{name:<34}{d['unit']:>10}{fmt(v.get('jobtunnel')):>11}{ref or '-':>9}"
            f"{fmt(v.get(ref)) if ref else '-':>10}{fmt(d['ratio']):>8}  {d['goal']}{verdict}"
        )
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    """The machine a report was made on."""
    return {
        "node": platform.node(),
        "system": f"{platform.system()} {platform.release()}",
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }


def report_head(
    started: datetime, quick: bool, t0: float, load_start: tuple[float, float, float]
) -> dict[str, Any]:
    """What every report starts with: when, how long, where, and the machine's load."""
    return {
        "date": f"{started:%Y-%m-%d %H:%M} UTC",
        "quick": quick,
        "seconds": round(time.monotonic() - t0, 1),
        "machine": machine(),
        "loadavg_start": [round(x, 2) for x in load_start],
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
    }


def save(report: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small and short: a harness check")
    parser.add_argument("--json", type=Path, help="results file (benchmarks/results/<date>.json)")
    parser.add_argument("--only", help=f"comma-separated phases of {','.join(PHASES)}")
    parser.add_argument("--dir", type=Path, help="where to put the temporary files")
    args = parser.parse_args(argv)
    only = set(args.only.split(",")) if args.only else set(PHASES)
    if only - set(PHASES):
        parser.error(f"unknown phase(s): {', '.join(sorted(only - set(PHASES)))}")
    params = QUICK if args.quick else FULL
    started = datetime.now(UTC)
    out = (
        args.json
        or HERE / "results" / f"{started:%Y-%m-%dT%H%M%S}{'-quick' if args.quick else ''}.json"
    )
    workdir = Path(tempfile.mkdtemp(prefix="jobtunnel-tunnels-", dir=args.dir))
    run = Run(params, workdir)
    load_start = os.getloadavg()
    t0 = time.monotonic()
    try:
        with Services() as services:
            if "throughput" in only:
                run.transfer(services)
            if "log" in only:
                run.log_to_tunnel(services)
            if "recovery" in only:
                run.recovery(services)
            if "silent" in only:
                run.silent_failure(services)
            if "idle" in only:
                run.idle(services)
        if "detect" in only:
            run.detect()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    # The daemon's event_loop = "auto" picks uvloop when it is installed.
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    report: dict[str, Any] = {
        **report_head(started, args.quick, t0, load_start),
        "event_loop": f"daemon loop {loop}",
        "params": asdict(params),
        "metrics": {name: m.to_dict() for name, m in run.metrics.items()},
        "extra": run.extra,
    }
    save(report, out)
    print(table(report))
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
