"""Detection throughput and peak memory on large generated job logs.

Writes logs of the asked size (one with no endpoint; one with an endpoint every few MiB and
one on its last line; a solver log where one line in 60 names a path under the job user's
home, ``/enc/uprod_<id>/work/...``, as real Rescale logs do, with one endpoint last), scans
each in a fresh process with the code path of ``jobtunnel scan``, and prints MB/s of the
whole process (start-up included) and peak RSS beside ``grep -F`` on the same file, with
their ratio. Goal: at least 300 MB/s on one core, memory flat in size.

    python benchmarks/detect_throughput.py                 # 400 MiB logs
    python benchmarks/detect_throughput.py --quick         # 64 MiB, a harness check
    python benchmarks/detect_throughput.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

MIB = 1 << 20
NOISE = (
    "{t} INFO  solver: time step {i} Courant max 0.48 residual p 1.23e-05 U 4.5e-06 k 2.1e-05\n"
    "{t} INFO  Emerald Max, On Demand Economy: writing fields to /enc/output/run_{i}/processor3\n"
    "{t} WARN  mesh: 12 cells with skewness above 4, max 4.73 at (0.12 0.55 -0.2)\n"
    "{t} INFO  Running Job: ExecutionTime = {i}.54 s  ClockTime = {i} s\n"
)
USER_PATH = "{t} INFO  reading /enc/uprod_qpWia/work/shared/case_{i}/constant/polyMesh/faces\n"
ENDPOINT = (
    "{t}\tINFO\t1\tYou can ssh to the cluster with: "
    "ssh -i <path/to/key> -p 32100 uprod_J{i:05d}@52.{a}.{b}.9;\n"
)

SCAN_CHILD = """
import sys, time, json
from pathlib import Path
from jobtunnel.daemon.process.scan import scan_file
from jobtunnel.daemon.config import Config
start = time.perf_counter()
found = scan_file(Path(sys.argv[1]), Config().detect, lambda r: None)
print(json.dumps({"seconds": time.perf_counter() - start, "endpoints": len(found)}))
"""


def write_log(path: Path, size: int, endpoint_every: int | None, user_paths: bool) -> None:
    """A log of ``size`` bytes; an endpoint line every ``endpoint_every`` bytes and last.

    With ``user_paths``, one line in 60 names a folder of the job user's home.
    """
    lines = [
        line.format(t=f"2026-11-24T09:{i % 60:02d}:{i % 59:02d}Z", i=i)
        for i in range(240)
        for line in NOISE.splitlines(keepends=True)
    ]
    if user_paths:
        lines = [
            USER_PATH.format(t=f"2026-11-24T09:{i % 60:02d}Z", i=i) if i % 60 == 0 else line
            for i, line in enumerate(lines)
        ]
    block = "".join(lines).encode()
    chunk = (block * (MIB // len(block) + 1))[:MIB]
    chunk = chunk[: chunk.rfind(b"\n") + 1]
    written = 0
    n = 0
    with path.open("wb") as out:
        while written < size:
            out.write(chunk)
            written += len(chunk)
            if endpoint_every and written // endpoint_every > n:
                n += 1
                line = ENDPOINT.format(t="11/24/2026 9:06:10 AM", i=n, a=n % 250, b=n // 250)
                out.write(line.encode())
        if endpoint_every or user_paths:
            out.write(ENDPOINT.format(t="11/24/2026 11:47:03 AM", i=0, a=1, b=2).encode())


def run_child(argv: list[str], *, capture: bool = True) -> tuple[float, int, str]:
    """Run argv; return (wall seconds, peak RSS in bytes, stdout) of that process alone.

    The parent stays small: a forked child starts with the parent's pages, and ru_maxrss
    would count them.
    """
    start = time.perf_counter()
    out_to = subprocess.PIPE if capture else subprocess.DEVNULL
    proc = subprocess.Popen(argv, stdout=out_to, text=True)
    out = proc.stdout.read() if proc.stdout is not None else ""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0, 1):  # grep exits 1 when nothing matched
        raise SystemExit(f"{argv[0]} failed with status {proc.returncode}")
    # ru_maxrss is KiB on Linux, bytes on macOS.
    rss = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    return time.perf_counter() - start, rss, out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=400, help="log size in MiB (400)")
    parser.add_argument("--quick", action="store_true", help="64 MiB logs: checks the harness")
    parser.add_argument("--dir", type=Path, help="where to write the logs (a temp folder)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    size = 64 * MIB if args.quick else args.size_mb * MIB
    workdir = Path(tempfile.mkdtemp(prefix="jobtunnel-bench-", dir=args.dir))
    results = []
    try:
        # Idle interpreter plus imports: the floor that "flat memory" is measured against.
        _, floor_rss, _ = run_child([sys.executable, "-c", "import jobtunnel.daemon.cli"])
        cases = (
            ("no endpoint", None, False),
            ("endpoint every 4 MiB", 4 * MIB, False),
            ("user paths, 1 line in 60", None, True),
        )
        for case, every, user_paths in cases:
            path = workdir / f"{case.replace(' ', '-').replace(',', '')}.log"
            print(f"writing {size // MIB} MiB log ({case})...", file=sys.stderr, flush=True)
            write_log(path, size, every, user_paths)
            real = path.stat().st_size
            # Read once first so that both tools find the file in the page cache.
            run_child(["cat", str(path)], capture=False)
            print(f"scanning ({case})...", file=sys.stderr, flush=True)
            wall, rss, out = run_child([sys.executable, "-c", SCAN_CHILD, str(path)])
            scan = json.loads(out)
            grep_seconds, _, _ = run_child(["grep", "-c", "-F", "prod_", str(path)])
            results.append(
                {
                    "case": case,
                    "bytes": real,
                    "endpoints": scan["endpoints"],
                    "seconds": round(scan["seconds"], 3),
                    "mb_per_s": round(real / scan["seconds"] / 1e6, 1),
                    "process_seconds": round(wall, 3),
                    "process_mb_per_s": round(real / wall / 1e6, 1),
                    "peak_rss_mb": round(rss / 1e6, 1),
                    "rss_over_idle_mb": round((rss - floor_rss) / 1e6, 1),
                    "grep_mb_per_s": round(real / grep_seconds / 1e6, 1),
                    "ratio_to_grep": round(grep_seconds / wall, 3),
                }
            )
            path.unlink()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    header = (
        f"{'case':<26}{'size MiB':>9}{'found':>7}{'MB/s':>8}{'in-proc':>9}{'grep MB/s':>11}"
        f"{'ratio':>7}{'peak RSS MB':>13}{'over idle':>11}"
    )
    print(
        f"detection throughput, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        f"{platform.node()} {platform.machine()}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs"
    )
    print(header)
    for r in results:
        print(
            f"{r['case']:<26}{r['bytes'] // MIB:>9}{r['endpoints']:>7}{r['process_mb_per_s']:>8}"
            f"{r['mb_per_s']:>9}{r['grep_mb_per_s']:>11}{r['ratio_to_grep']:>7}{r['peak_rss_mb']:>13}"
            f"{r['rss_over_idle_mb']:>11}"
        )
    print("MB/s: the whole scan process, start-up included; in-proc: the scan alone;")
    print("ratio: grep -F's time over the scan process's time (1.0 = as fast as grep)")
    verdict = all(r["process_mb_per_s"] >= 300 for r in results)
    print(f"goal >= 300 MB/s (whole process) in every case: {'met' if verdict else 'NOT met'}")
    if args.json:
        args.json.write_text(
            json.dumps({"date": datetime.now(UTC).isoformat(), "results": results}, indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
