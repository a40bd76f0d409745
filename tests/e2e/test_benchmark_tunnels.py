"""The side-by-side tunnel benchmark runs end to end in its quick mode (a harness check:
figures are printed, never asserted here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.deps import require_sshd, require_tool

ROOT = Path(__file__).resolve().parents[2]

PEERS = {
    "throughput_same_cipher_mb_s": {"jobtunnel", "ssh"},
    "throughput_default_cipher_mb_s": {"jobtunnel", "ssh"},
    "echo_rtt_us": {"jobtunnel", "ssh"},
    "connections_per_s": {"jobtunnel", "ssh"},
    "log_to_tunnel_ms": {"jobtunnel"},
    "recovery_ms": {"jobtunnel", "autossh"},
    "refused_during_outage": {"jobtunnel", "autossh"},
    "silent_failure_noticed_s": {"jobtunnel", "autossh"},
    "silent_failure_reconnected_s": {"jobtunnel", "autossh"},
    "idle_cpu_s_per_min": {"jobtunnel", "ssh"},
    "idle_peak_rss_mb": {"jobtunnel", "ssh"},
    "idle_wakeups_per_s": {"jobtunnel", "ssh"},
    "detect_mb_s": {"jobtunnel", "grep"},
    "detect_peak_rss_mb": {"jobtunnel"},
}


def _processes() -> set[int]:
    return {int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()}


def _mentions(pid: int, text: str) -> bool:
    """Whether the process's command line or environment mentions ``text``."""
    for what in ("cmdline", "environ"):
        try:
            if text.encode() in Path(f"/proc/{pid}/{what}").read_bytes():
                return True
        except OSError:
            pass
    return False


@pytest.mark.sshd
@pytest.mark.timeout(180)
def test_quick_run_reports_every_metric_for_every_peer(tmp_path: Path) -> None:
    require_sshd()
    require_tool("autossh", "autossh")
    out = tmp_path / "tunnels.json"
    before = _processes()
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "tunnels.py"),
            "--quick",
            "--dir",
            str(tmp_path),
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "jobtunnel vs peers" in result.stdout
    report = json.loads(out.read_text())
    assert report["quick"] is True
    assert len(report["loadavg_start"]) == 3
    metrics = report["metrics"]
    assert set(metrics) >= set(PEERS)
    for name, peers in PEERS.items():
        values = metrics[name]["values"]
        assert set(values) >= peers, name
        for peer in peers:
            assert isinstance(values[peer], int | float), (name, peer)
            assert values[peer] >= 0, (name, peer)
        if metrics[name]["reference"]:
            assert metrics[name]["ratio"] is not None or values[metrics[name]["reference"]] == 0
    # The same run measured the peers: transfers really moved data.
    assert metrics["throughput_same_cipher_mb_s"]["values"]["ssh"] > 0
    assert list(tmp_path.glob("jobtunnel-*")) == []  # temp files cleaned up
    # Nothing left behind: every sshd, ssh, autossh and daemon of the run names a file in
    # its folder (config, key, HOME); other people's processes on the machine do not.
    assert [p for p in _processes() - before if _mentions(p, str(tmp_path))] == []
