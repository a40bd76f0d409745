"""jobtunnel beside OpenSSH ``ssh -N -L`` over a realistic link, in one run.

A user-space shaper (tests/helpers/shaper.py; ``tc netem`` needs sch_netem, which these
machines lack) sits between both peers and a throw-away sshd: 40 ms round trip and
200 Mbit/s each way by default. Through it, and first over plain loopback for the figures
beside it, both peers forward the same services; each round measures, peer order
alternating, throughput from the stream service, the time to the first byte of HTTP
requests (a new connection each), and the load time of a real JupyterLab (started here,
behind the sshd) in headless Chromium with a fresh profile and no cache. Prints medians and
the ratio jobtunnel / ssh -L with a bootstrap 95% interval; writes everything as JSON.
Each peer has a shaper (a link) of its own, and its local ports on a loopback address of
the run's own (see private_loopback); after each round, what crossed each link in a second
of idleness is recorded too (it should be about nothing).

    .venv/bin/python benchmarks/shaped_link.py                 # full run, about 6 minutes
    .venv/bin/python benchmarks/shaped_link.py --quick         # harness check, about 1 minute
    .venv/bin/python benchmarks/shaped_link.py --rtt-ms 80 --rate-mbit 50 --repeats 9

Needs Debian's chromium and chromium-driver, and the ``bench`` extra (jupyterlab, selenium):
``apt-get install -y chromium chromium-driver`` and ``.venv/bin/pip install -e '.[bench]'``.
The browser is driven through Selenium and the Debian chromedriver, whose version always
matches the Debian chromium (Playwright would bring a 40 MB driver of its own for the same
job). Machines are shared and noisy: quote the ratios (same run), not the absolute figures.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import os
import random
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.peers import Daemon, Services, SshPeer, free_port, kill_tree, start_sshd
from benchmarks.probes import HTTP_GET, proc_sample, throughput, wait_until
from benchmarks.tunnels import Metric, fmt, log, report_head, save
from tests.helpers.shaper import Shaper

HERE = Path(__file__).resolve().parent
PEERS = ("ssh", "jobtunnel")
LABEL = {"ssh": "ssh -L", "jobtunnel": "jobtunnel"}
GOAL = 0.03  # jobtunnel within 3% of ssh -L on each figure

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--no-proxy-server",
    "--window-size=1280,900",
]
# Recorded from the first byte of the document on: when each milestone entered the DOM
# (performance.now() is measured from the navigation's start).
MARKS = {
    "dock": "#jp-main-dock-panel",  # the application shell is built
    "launcher": ".jp-Launcher .jp-LauncherCard",  # the launcher shows its kernel cards
}
MARKS_JS = """
(() => {
  const wanted = WANTED;
  const marks = window.__jtMarks = {};
  const check = () => {
    for (const [k, sel] of Object.entries(wanted))
      if (!(k in marks) && document.querySelector(sel)) marks[k] = performance.now();
    return Object.keys(marks).length === Object.keys(wanted).length;
  };
  const obs = new MutationObserver(() => { if (check()) obs.disconnect(); });
  obs.observe(document, {childList: true, subtree: true});
})();
""".replace("WANTED", json.dumps(MARKS))
WAIT_MARKS_JS = """
const done = arguments[arguments.length - 1];
const until = Date.now() + arguments[0];
(function poll() {
  const m = window.__jtMarks || {};
  if (Object.keys(m).length === COUNT || Date.now() > until) {
    const res = performance.getEntriesByType('resource');
    const nav = performance.getEntriesByType('navigation')[0];
    done({marks: m, requests: res.length + 1,
          bytes: res.reduce((a, r) => a + r.transferSize, nav ? nav.transferSize : 0)});
  } else setTimeout(poll, 10);
})();
""".replace("COUNT", str(len(MARKS)))


@dataclass(frozen=True)
class Params:
    rounds: int  # each: one throughput, ttfb_requests requests and one page load per peer
    stream_mb: int
    ttfb_requests: int
    page_timeout_s: float


FULL = Params(rounds=7, stream_mb=100, ttfb_requests=10, page_timeout_s=90)
QUICK = Params(rounds=1, stream_mb=8, ttfb_requests=3, page_timeout_s=90)


def missing_tools() -> list[str]:
    """What this benchmark needs and does not find, each with what to install."""
    out = []
    if not os.access(CHROMIUM, os.X_OK):
        out.append(f"{CHROMIUM} (Debian: apt-get install -y chromium)")
    if shutil.which("chromedriver") is None:
        out.append("chromedriver (Debian: apt-get install -y chromium-driver)")
    for module, package in (("jupyterlab", "jupyterlab"), ("selenium", "selenium")):
        if importlib.util.find_spec(module) is None:
            out.append(f"the Python package {package} (.venv/bin/pip install -e '.[bench]')")
    return out


def private_loopback() -> str:
    """A loopback address of this run's own for the peers' local ports. Other jobtunnel
    daemons on a shared machine look at "their cluster", which is this machine: their
    discovery sends an HTTP GET to 127.0.0.1 on every listening port, and one that
    reached a forward here would start a download through it (the stream service reads
    the GET as a byte count)."""
    rnd = random.Random()
    for _ in range(20):
        addr = f"127.{rnd.randint(2, 254)}.{rnd.randint(0, 255)}.{rnd.randint(1, 254)}"
        with socket.socket() as s:
            try:
                s.bind((addr, 0))
            except OSError:
                continue
        return addr
    raise RuntimeError("no loopback address besides 127.0.0.1 can be bound here")


def free_port_at(addr: str) -> int:
    with socket.socket() as s:
        s.bind((addr, 0))
        return int(s.getsockname()[1])


# -- the measures ------------------------------------------------------------------------
# Throughput is probes.throughput's (with the address: see private_loopback).


def http_up(addr: str, port: int) -> Callable[[], bool]:
    """A check for :func:`wait_until`: an HTTP request through ``addr:port`` is answered."""

    def check() -> bool:
        try:
            ttfb_ms(addr, port, 5.0)
        except OSError:
            return False
        return True

    return check


def ttfb_ms(addr: str, port: int, timeout: float = 30.0) -> float:
    """Milliseconds from connecting to ``addr:port`` to the first byte of the HTTP answer
    (a new connection, so a new channel through the tunnel); reads the rest after."""
    start = time.perf_counter()
    with socket.create_connection((addr, port), timeout=timeout) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(HTTP_GET)
        first = sock.recv(1)
        elapsed = time.perf_counter() - start
        if first != b"H":
            raise ConnectionError(f"not an HTTP answer through port {port}: {first!r}")
        while sock.recv(1 << 16):
            pass
    return elapsed * 1000


class JupyterLab:
    """``jupyter lab`` on 127.0.0.1:``port`` (behind the sshd), in its own config and
    runtime dirs, with no network of its own (no news, update checks or PyPI)."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.token = secrets.token_hex(16)
        root = workdir / "notebooks"
        root.mkdir(parents=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "JPY"))}
        env.update(
            HOME=str(workdir),
            JUPYTER_CONFIG_DIR=str(workdir / "config"),
            JUPYTER_DATA_DIR=str(workdir / "data"),
            JUPYTER_RUNTIME_DIR=str(workdir / "runtime"),
            IPYTHONDIR=str(workdir / "ipython"),
        )
        self.log_path = workdir / "jupyter.log"
        argv = [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            f"--port={self.port}",
            "--ServerApp.port_retries=0",
            "--ServerApp.ip=127.0.0.1",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={root}",
            "--LabApp.extension_manager=readonly",
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ]
        if os.geteuid() == 0:  # CI and these machines run as root; a cluster does not
            argv.append("--allow-root")
        with self.log_path.open("wb") as out:
            self.proc = subprocess.Popen(
                argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )
        try:
            wait_until(self._serving, "jupyter lab", 60)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"jupyter lab did not start:\n{self.text()[-3000:]}") from None

    def _serving(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"jupyter lab exited:\n{self.text()[-3000:]}")
        url = f"http://127.0.0.1:{self.port}/api/status?token={self.token}"
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                return int(answer.status) == 200
        except OSError:
            return False

    def url(self, addr: str, port: int) -> str:
        return f"http://{addr}:{port}/lab?token={self.token}"

    def text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        kill_tree(self.proc)

    def __enter__(self) -> JupyterLab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def chromium(workdir: Path, addr: str) -> Iterator[Any]:
    """A fresh headless Chromium (new profile, cache off) under chromedriver."""
    # Selenium Manager would look for drivers online: the paths are given, and it stays off.
    os.environ["SE_OFFLINE"] = "true"
    os.environ["SE_AVOID_STATS"] = "true"
    webdriver = importlib.import_module("selenium.webdriver")
    chrome_service = importlib.import_module("selenium.webdriver.chrome.service")
    profile = Path(tempfile.mkdtemp(prefix="chromium-", dir=workdir))
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # Loopback only: a name the page might look up goes nowhere.
    rules = f"MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1, EXCLUDE {addr}"
    for flag in [*CHROMIUM_FLAGS, f"--host-resolver-rules={rules}", f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    service = chrome_service.Service(
        executable_path=shutil.which("chromedriver"), log_output=str(workdir / "chromedriver.log")
    )
    driver = webdriver.Chrome(options=options, service=service)
    try:
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": True})
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": MARKS_JS})
        yield driver
    finally:
        with contextlib.suppress(Exception):
            driver.quit()
        proc = getattr(service, "process", None)
        if isinstance(proc, subprocess.Popen):
            kill_tree(proc)
        shutil.rmtree(profile, ignore_errors=True)


def page_load(url: str, addr: str, workdir: Path, timeout: float) -> dict[str, float]:
    """Milliseconds from navigation start to each of :data:`MARKS`, and what was loaded."""
    with chromium(workdir, addr) as driver:
        driver.set_page_load_timeout(timeout)
        driver.set_script_timeout(timeout + 10)
        driver.get(url)
        got = driver.execute_async_script(WAIT_MARKS_JS, int(timeout * 1000))
    marks = got["marks"]
    if len(marks) != len(MARKS):
        raise TimeoutError(f"JupyterLab did not load within {timeout:.0f} s: {marks}")
    return {
        **{k: float(v) for k, v in marks.items()},
        "requests": float(got["requests"]),
        "mb": float(got["bytes"]) / 1e6,
    }


# -- one link ------------------------------------------------------------------------------


def ratio_interval(
    jt: list[float], ref: list[float], seed: int = 1, n: int = 2000
) -> tuple[float, float] | None:
    """A bootstrap 95% interval of median(jt) / median(ref): how much of a ratio's distance
    from 1 the run's own scatter explains."""
    if len(jt) < 2 or len(ref) < 2 or min(ref) <= 0:
        return None
    rnd = random.Random(seed)
    ratios = sorted(
        statistics.median(rnd.choices(jt, k=len(jt)))
        / statistics.median(rnd.choices(ref, k=len(ref)))
        for _ in range(n)
    )
    return ratios[int(0.025 * n)], ratios[int(0.975 * n) - 1]


def within(better: str) -> Callable[[dict[str, float]], bool]:
    if better == "higher":
        return lambda v: v["jobtunnel"] >= (1 - GOAL) * v["ssh"]
    return lambda v: v["jobtunnel"] <= (1 + GOAL) * v["ssh"]


class Link:
    """The measures for both peers over one link (loopback, or through a shaper)."""

    def __init__(self, name: str, params: Params, goals: bool) -> None:
        self.name = name
        self.p = params
        # The loopback figures' own goals are tunnels.py's; here they stand beside.
        goal = f"within {GOAL:.0%} of ssh -L" if goals else ""

        def metric(key: str, unit: str, better: str) -> Metric:
            runs: dict[str, list[float]] = {p: [] for p in PEERS}
            check = within(better) if goals else None
            return Metric(key, unit, better, "ssh", goal, check, runs)

        self.metrics = {
            "throughput": metric("throughput_mb_s", "MB/s", "higher"),
            "ttfb": metric("http_ttfb_ms", "ms", "lower"),
            "launcher": metric("jupyterlab_load_ms", "ms", "lower"),
            "dock": metric("jupyterlab_shell_ms", "ms", "lower"),
        }
        # The peer's own CPU per page load: on two cores it competes with the browser.
        self.page_cpu = Metric(
            "jupyterlab_load_peer_cpu_ms",
            "CPU-ms",
            "lower",
            "ssh",
            "",
            None,
            {p: [] for p in PEERS},
        )
        # What crosses a peer's link while nothing is asked of it: should be ~0 (keepalives).
        self.idle = Metric(
            "link_idle_kb_s",
            "KB/s",
            "lower",
            "ssh",
            "",
            None,
            {p: [] for p in PEERS},
        )
        self.page: dict[str, list[dict[str, float]]] = {p: [] for p in PEERS}

    def run(
        self,
        addr: str,
        ports: dict[str, dict[str, int]],
        pids: dict[str, int],
        lab: JupyterLab,
        workdir: Path,
        shapers: dict[str, Shaper] | None = None,
    ) -> None:
        p = self.p
        size = p.stream_mb * 1_000_000
        m = self.metrics
        for peer in PEERS:  # warm-up: the first channels, jupyter's first renders
            throughput(ports[peer]["stream"], max(size // 8, 1_000_000), host=addr)
            ttfb_ms(addr, ports[peer]["http"])
            page_load(lab.url(addr, ports[peer]["lab"]), addr, workdir, p.page_timeout_s)
        log(f"{self.name}: warmed up")
        for rnd in range(p.rounds):
            order = PEERS if rnd % 2 == 0 else tuple(reversed(PEERS))
            for peer in order:
                m["throughput"].runs[peer].append(
                    throughput(ports[peer]["stream"], size, host=addr)
                )
                m["ttfb"].runs[peer].extend(
                    ttfb_ms(addr, ports[peer]["http"]) for _ in range(p.ttfb_requests)
                )
                cpu0 = proc_sample(pids[peer]).cpu_s
                url = lab.url(addr, ports[peer]["lab"])
                page = page_load(url, addr, workdir, p.page_timeout_s)
                self.page_cpu.runs[peer].append((proc_sample(pids[peer]).cpu_s - cpu0) * 1000)
                self.page[peer].append(page)
                m["launcher"].runs[peer].append(page["launcher"])
                m["dock"].runs[peer].append(page["dock"])
            if shapers:
                before = {peer: shapers[peer].stats.bytes_down for peer in PEERS}
                time.sleep(1.0)
                for peer in PEERS:
                    idle = (shapers[peer].stats.bytes_down - before[peer]) / 1e3
                    self.idle.runs[peer].append(idle)
            log(
                f"{self.name} round {rnd + 1}/{p.rounds}: "
                + ", ".join(
                    f"{LABEL[peer]} {m['throughput'].runs[peer][-1]:.1f} MB/s "
                    f"ttfb {statistics.median(m['ttfb'].runs[peer][-p.ttfb_requests :]):.1f} ms "
                    f"lab {m['launcher'].runs[peer][-1]:.0f} ms"
                    for peer in PEERS
                )
            )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for m in [*self.metrics.values(), self.page_cpu, self.idle]:
            d = m.to_dict()
            ci = ratio_interval(m.runs["jobtunnel"], m.runs["ssh"])
            d["ratio_95"] = [round(x, 3) for x in ci] if ci else None
            out[m.name] = d
        out["jupyterlab_page"] = {
            peer: {
                "requests": statistics.median(x["requests"] for x in pages),
                "mb": round(statistics.median(x["mb"] for x in pages), 2),
            }
            for peer, pages in self.page.items()
            if pages
        }
        return out


@contextmanager
def peers_on(
    home: Path,
    sshd: Any,
    via: dict[str, int],
    remote: dict[str, int],
    addr: str,
    discovery: bool,
) -> Iterator[tuple[dict[str, dict[str, int]], dict[str, int]]]:
    """Both peers forwarding ``remote`` (name -> port behind the sshd) from ports on
    ``addr``, each through the sshd reached at 127.0.0.1:``via[peer]``; yields each
    peer's local ports (by name) and pid.

    ``discovery`` False turns the daemon's service discovery off: here the "cluster" is
    this machine, so its probes (an HTTP GET, a TLS hello) reach the harness's own ports,
    the stream service among them, which takes any 8 bytes for a byte count and streams
    without end; that download then shares the link with the measured one. A real
    cluster has no such service."""
    settings = {} if discovery else {"tunnels": {"discover_interval": 0}}
    with ExitStack() as stack:
        ports: dict[str, dict[str, int]] = {}
        pids: dict[str, int] = {}
        for peer in PEERS:
            port = via[peer]
            local = {name: free_port_at(addr) for name in remote}
            specs = [f"{addr}:{local[name]}:127.0.0.1:{remote[name]}" for name in remote]
            if peer == "ssh":
                ssh = stack.enter_context(SshPeer(home / f"ssh-{port}", sshd, specs, port=port))
                pids[peer] = ssh.pid
            else:
                jt = stack.enter_context(Daemon(home / f"jobtunnel-{port}", sshd, specs, settings))
                jt.drop_log(port)  # the job log names the port the link listens on
                pids[peer] = jt.pid
            ports[peer] = local
        for peer in PEERS:
            wait_until(http_up(addr, ports[peer]["http"]), f"{LABEL[peer]}'s tunnel", 60)
        yield ports, pids


def table(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"jobtunnel vs ssh -L over a shaped link, {report['date']}, {m['node']} "
        f"({m['cpus']} CPUs), Python {m['python']}; load avg "
        f"{report['loadavg_start'][0]:.2f} -> {report['loadavg_end'][0]:.2f}; "
        f"{report['params']['rounds']} rounds"
        + ("; QUICK (harness check, not figures)" if report["quick"] else ""),
    ]
    names = {
        "throughput_mb_s": "throughput",
        "http_ttfb_ms": "HTTP time to first byte",
        "jupyterlab_load_ms": "JupyterLab load (launcher)",
        "jupyterlab_shell_ms": "JupyterLab shell (dock panel)",
        "jupyterlab_load_peer_cpu_ms": "peer CPU per JupyterLab load",
        "link_idle_kb_s": "link traffic while idle",
    }
    for link, res in report["links"].items():
        shape = report["shaper"] if link == "shaped" else None
        lines.append("")
        lines.append(
            f"{link}: "
            + (
                f"{shape['rtt_ms']:g} ms round trip, {shape['rate_mbit_s']:g} Mbit/s each way, "
                f"{shape['buffer_bytes'] // 1024} KiB buffer per direction, a shaper per peer"
                if shape
                else "no shaper (sshd on loopback)"
            )
        )
        lines.append(
            f"{'measure':<31}{'unit':>6}{'ssh -L':>10}{'jobtunnel':>11}{'ratio':>8}"
            f"{'95% interval':>16}  goal"
        )
        for key, label in names.items():
            d = res[key]
            v = d["values"]
            ci = d["ratio_95"]
            met = d["goal_met"]
            verdict = "-" if met is None else ("met" if met else "NOT met")
            lines.append(
                f"{label:<31}{d['unit']:>6}{fmt(v.get('ssh')):>10}{fmt(v.get('jobtunnel')):>11}"
                f"{fmt(d['ratio']):>8}"
                f"{f'{ci[0]:.3f}-{ci[1]:.3f}' if ci else '-':>16}  {verdict}"
            )
        page = res["jupyterlab_page"].get("ssh")
        if page:
            lines.append(f"(JupyterLab page: {page['requests']:.0f} requests, {page['mb']} MB)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Progress goes to stderr; the table to stdout; everything to the JSON file.",
    )
    parser.add_argument("--rtt-ms", type=float, default=40.0, help="round trip (default 40)")
    parser.add_argument(
        "--rate-mbit", type=float, default=200.0, help="rate each way, Mbit/s (default 200)"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        help="rounds (default 7, --quick 1); each round measures each peer once "
        "(one throughput run, --ttfb-requests requests, one JupyterLab load)",
    )
    parser.add_argument("--ttfb-requests", type=int, help="HTTP requests per round (default 10)")
    parser.add_argument("--stream-mb", type=int, help="bytes per throughput run, MB (default 100)")
    parser.add_argument("--buffer-kb", type=int, help="shaper buffer per direction, KiB")
    parser.add_argument("--no-loopback", action="store_true", help="skip the loopback figures")
    parser.add_argument(
        "--discovery",
        action="store_true",
        help="leave the daemon's service discovery on (off by default: on one machine it "
        "probes the harness's own stream service, which answers a GET with an endless "
        "download that then shares the link)",
    )
    parser.add_argument("--quick", action="store_true", help="small and short: a harness check")
    parser.add_argument(
        "--json", type=Path, help="results file (benchmarks/results/shaped-<date>.json)"
    )
    parser.add_argument("--dir", type=Path, help="where to put the temporary files")
    args = parser.parse_args(argv)
    params = QUICK if args.quick else FULL
    overrides = {
        "rounds": args.repeats,
        "ttfb_requests": args.ttfb_requests,
        "stream_mb": args.stream_mb,
    }
    params = Params(**{**asdict(params), **{k: v for k, v in overrides.items() if v is not None}})
    if params.rounds < 1 or params.ttfb_requests < 1 or params.stream_mb < 1:
        parser.error("--repeats, --ttfb-requests and --stream-mb must be at least 1")
    if args.rtt_ms < 0 or args.rate_mbit <= 0:
        parser.error("--rtt-ms must be >= 0 and --rate-mbit > 0")
    missing = missing_tools()
    if missing:
        print("shaped_link.py needs: " + "; ".join(missing), file=sys.stderr)
        return 2

    started = datetime.now(UTC)
    out = args.json or HERE / "results" / (
        f"shaped-{started:%Y-%m-%dT%H%M%S}{'-quick' if args.quick else ''}.json"
    )
    workdir = Path(tempfile.mkdtemp(prefix="jobtunnel-shaped-", dir=args.dir))
    load_start = os.getloadavg()
    t0 = time.monotonic()
    links: dict[str, Link] = {}
    buffer = args.buffer_kb * 1024 if args.buffer_kb else None
    shaper_info: dict[str, Any] = {}
    try:
        with ExitStack() as stack:
            services = stack.enter_context(Services())
            lab = stack.enter_context(JupyterLab(workdir / "jupyter"))
            sshd = start_sshd(workdir / "sshd")
            stack.callback(sshd.stop)
            remote = {
                "stream": services.ports["stream"],
                "http": services.ports["http"],
                "lab": lab.port,
            }
            addr = private_loopback()
            log(f"sshd on {sshd.port}, jupyter lab on {lab.port}, local ports on {addr}")
            for name in ("loopback", "shaped"):
                if name == "loopback" and args.no_loopback:
                    continue
                with ExitStack() as link_stack:
                    via = {peer: sshd.port for peer in PEERS}
                    shapers: dict[str, Shaper] = {}
                    if name == "shaped":
                        # A link of its own for each peer, as each would have alone.
                        for peer in PEERS:
                            shapers[peer] = link_stack.enter_context(
                                Shaper(
                                    "127.0.0.1",
                                    sshd.port,
                                    rtt=args.rtt_ms / 1000,
                                    rate_bps=args.rate_mbit * 1e6,
                                    buffer=buffer,
                                )
                            )
                            via[peer] = shapers[peer].port
                        shaper_info = shapers["ssh"].describe()
                        log(f"shapers on {via}: {shaper_info}")
                    ports, pids = link_stack.enter_context(
                        peers_on(workdir, sshd, via, remote, addr, args.discovery)
                    )
                    link = Link(name, params, goals=name == "shaped")
                    links[name] = link
                    link.run(addr, ports, pids, lab, workdir, shapers)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    report: dict[str, Any] = {
        **report_head(started, args.quick, t0, load_start),
        "params": asdict(params),
        "daemon_discovery": args.discovery,
        "shaper": shaper_info,
        "links": {name: link.to_dict() for name, link in links.items()},
    }
    save(report, out)
    print(table(report))
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
