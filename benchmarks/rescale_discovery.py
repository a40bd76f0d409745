"""The Rescale API as a source: from a job shown as started to the first request through
its tunnel, and the requests the daemon spends while nothing happens.

It starts its own sshd (one port per repeat, so that each job is a new endpoint), a web
service behind it, a fake Rescale API on loopback and the real daemon with the default
poll intervals (fast 10 s while a job waits for its cluster, slow 60 s otherwise). For
each repeat a job is submitted (Queued), and after a random part of the fast interval it
is shown as Executing with its master node; the clock runs until an HTTP request through
the job's tunnel is answered. Then the job completes (its tunnel ends). Last, with no job
in flight, it counts the API requests over the idle window.

Goals: median <= 11 s (one fast interval plus connect), <= 60 requests per hour idle.

    python benchmarks/rescale_discovery.py                # 7 repeats, 190 s idle
    python benchmarks/rescale_discovery.py --quick        # 2 repeats, 70 s idle
    python benchmarks/rescale_discovery.py --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.helpers.daemonproc import Daemon, make_env, wait_for
from tests.helpers.rescale_api import FakeRescale, node
from tests.helpers.services import http_get, http_server
from tests.helpers.sshd import SshServer, free_port

FAST = 10.0
GOAL_MEDIAN = 11.0
GOAL_IDLE = 60.0


def _control(cmd: str) -> Any:
    # Imported by name: mypy checks benchmarks without the installed package.
    client: Any = importlib.import_module("jobtunnel.daemon.api.client")
    return client.call_sync(cmd, {}, timeout=5)


def _local_port(job: str) -> int | None:
    for ep in _control("status")["endpoints"]:
        if ep["job_id"] == job and ep["state"] == "up" and ep["forwards"]:
            return ep["forwards"][0]["local_port"]  # type: ignore[no-any-return]
    return None


def _polled_after(api: FakeRescale, seen: int) -> bool:
    return api.count("/api/v2/jobs/") > seen


def _ended(job: str) -> bool:
    return any(
        e["job_id"] == job and e["state"] == "ended" for e in _control("status")["endpoints"]
    )


def _served(port: int) -> bool:
    try:
        return asyncio.run(http_get(port, timeout=2)).startswith(b"hello")
    except (OSError, AssertionError, TimeoutError):
        return False


def measure(repeats: int, idle: float, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="jt-rescale-") as tmp, http_server() as http:
        root = Path(tmp)
        sshd = SshServer(root / "sshd")
        extra = [free_port() for _ in range(repeats - 1)]
        # Port lines come before ListenAddress; every port is one more endpoint identity.
        sshd.config.write_text("".join(f"Port {p}\n" for p in extra) + sshd.config.read_text())
        sshd.ports += extra
        sshd.start()
        env = make_env(root / "user", sshd, http)
        api = FakeRescale()
        text = env.config_text([f"{free_port()}:127.0.0.1:{http}"])
        env.config.write_text(text + f"\n[rescale]\nurl = '{api.url}'\n")  # default intervals
        env.vars["RESCALE_API_KEY"] = api.key
        os.environ.update(env.vars)  # this process's control client finds the daemon
        daemon = Daemon(env)
        seconds: list[float] = []
        try:
            daemon.wait_ready()
            previous: str | None = None
            for i, port in enumerate(sshd.ports):
                job = f"J{i:04d}"
                # Jobs minutes apart in life; here one fast interval apart, which keeps
                # the daemon within its request budget (12 a minute) as it would be.
                time.sleep(FAST)
                api.job(job, "Queued", "Not Started", name=f"bench {i}")
                if previous is not None:
                    api.job(previous, "Completed", "Stopped")
                seen = api.count("/api/v2/jobs/")
                _control("rescale_refresh")  # seen Queued at once: not measured
                wait_for(partial(_polled_after, api, seen), "a poll", timeout=75)
                if previous is not None:
                    wait_for(partial(_ended, previous), f"{previous} ended", timeout=30)
                time.sleep(rng.uniform(0, FAST))  # the job starts at any point of a cycle
                start = time.monotonic()
                api.instances(job, [node("127.0.0.1", sshd.user, port)])
                api.job(job, "Executing", "Started")
                local = wait_for(partial(_local_port, job), f"{job}'s tunnel", timeout=60)
                wait_for(partial(_served, local), "a request through the tunnel", timeout=30)
                seconds.append(time.monotonic() - start)
                print(f"  {job}: {seconds[-1]:.2f} s", flush=True)
                previous = job
            assert previous is not None
            api.job(previous, "Completed", "Stopped")
            _control("rescale_refresh")
            wait_for(partial(_ended, previous), f"{previous} ended", timeout=75)
            # Idle: every job ended; only the slow poll is left.
            time.sleep(2)
            first = len(api.requests)
            began = time.time()
            time.sleep(idle)
            idle_requests = api.requests[first:]
            per_hour = len(idle_requests) / idle * 3600
        finally:
            daemon.kill()
            api.close()
            sshd.stop()
    return {
        "repeats": repeats,
        "seconds": seconds,
        "median_s": statistics.median(seconds),
        "max_s": max(seconds),
        "idle_window_s": idle,
        "idle_requests": len(idle_requests),
        "idle_paths": [f"{r.at - began:.1f} s {r.method} {r.path}" for r in idle_requests],
        "idle_requests_per_hour": per_hour,
        "idle_started": began,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 repeats, 70 s idle")
    parser.add_argument("--repeats", type=int, help="jobs to start (default 7)")
    parser.add_argument("--idle", type=float, help="idle window, seconds (default 190)")
    parser.add_argument("--seed", type=int, default=15, help="for the start phases")
    parser.add_argument("--json", metavar="PATH", help="also write the results here")
    args = parser.parse_args()
    repeats = args.repeats or (2 if args.quick else 7)
    idle = args.idle or (70.0 if args.quick else 190.0)
    print(f"rescale discovery: {repeats} jobs, fast interval {FAST:g} s, idle {idle:g} s")
    result = measure(repeats, idle, args.seed)
    result |= {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "machine": platform.platform(),
    }
    median, per_hour = result["median_s"], result["idle_requests_per_hour"]
    print(f"{'measure':<52} {'jobtunnel':>10} {'goal':>8}")
    print(
        f"{'job started in the API -> first request, median (s)':<52} {median:>10.2f} "
        f"{'<= 11':>8}  {'met' if median <= GOAL_MEDIAN else 'NOT met'}"
    )
    print(f"{'  worst of the repeats (s)':<52} {result['max_s']:>10.2f}")
    print(
        f"{'API requests per hour while idle':<52} {per_hour:>10.0f} {'<= 60':>8}  "
        f"{'met' if per_hour <= GOAL_IDLE else 'NOT met'}"
    )
    for line in result["idle_paths"]:
        print(f"  idle: {line}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
