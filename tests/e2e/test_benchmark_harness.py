"""The benchmark harness runs end to end (figures are printed, never asserted here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_detect_throughput_quick_mode_reports_both_cases(tmp_path: Path) -> None:
    out = tmp_path / "detect.json"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "detect_throughput.py"),
            "--quick",
            "--dir",
            str(tmp_path),
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "MB/s" in result.stdout
    report = json.loads(out.read_text())
    cases = {r["case"]: r for r in report["results"]}
    assert cases["no endpoint"]["endpoints"] == 0
    # One endpoint every 4 MiB of 64 MiB, plus the last line.
    assert cases["endpoint every 4 MiB"]["endpoints"] == 17
    # The solver log naming the job user's folders has only its last line's endpoint.
    assert cases["user paths, 1 line in 60"]["endpoints"] == 1
    assert all(r["mb_per_s"] > 0 and r["peak_rss_mb"] > 0 for r in cases.values())
    assert list(tmp_path.glob("jobtunnel-bench-*")) == []  # logs cleaned up
