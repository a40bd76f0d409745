"""The benchmark harness runs end to end (figures are printed, never asserted here)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.helpers.deps import dependency_missing

ROOT = Path(__file__).resolve().parents[2]


def benchmark(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``benchmarks/<script> --quick ARGS``, which must succeed."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--quick", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result


def test_detect_throughput_quick_mode_reports_both_cases(tmp_path: Path) -> None:
    out = tmp_path / "detect.json"
    result = benchmark("detect_throughput.py", "--dir", str(tmp_path), "--json", str(out))
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


def test_network_change_quick_mode_measures_both_peers(tmp_path: Path) -> None:
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("autossh") is None:
        dependency_missing("the network-change benchmark needs root, ip and autossh")
    out = tmp_path / "net.json"
    benchmark("network_change.py", "--fault", "link", "--json", str(out))
    metrics = json.loads(out.read_text())["metrics"]
    assert set(metrics) == {
        f"link_{use}_{what}" for use in ("busy", "idle") for what in ("back_ms", "failed")
    }
    for what in ("link_busy_back_ms", "link_idle_back_ms"):
        values = metrics[what]["values"]
        assert set(values) == {"jobtunnel", "autossh"}
    assert out.with_suffix(".daemon.log").read_text().count("network changed") >= 2
