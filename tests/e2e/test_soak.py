"""The 60-second soak under faults (tests/helpers/soak.py; ``--minutes N`` runs it longer).

20 endpoints, a checksummed stream through each, one of every fault kind (sessions
killed, sshd restarted, sessions frozen then thawed, the daemon SIGKILLed and restarted).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.deps import require_sshd
from tests.helpers.soak import ENDPOINTS, FAULTS, soak

SECONDS = 60.0


@pytest.mark.timeout(180)
def test_soak_60s_under_faults(tmp_path: Path, isolated_home: Path) -> None:
    require_sshd()
    # Faults every 10-13 s (not 10-30) so that each kind happens once in a minute.
    # A slow machine stretches the run a little rather than skip a kind.
    report = soak(
        tmp_path, SECONDS, fault_every=(10.0, 13.0), seed=9, min_faults=len(FAULTS), say=print
    )
    print(report.text())
    assert report.start is not None and report.end is not None
    assert sorted({f.kind for f in report.faults}) == sorted(FAULTS), report.faults
    assert report.corrupted_bytes == 0
    assert report.unhandled == [], report.unhandled
    assert report.ports_moved == 0
    assert report.bytes_verified > 0 and report.streams_completed > 0
    # Every forward served again after every fault (generous bound, not a speed claim).
    assert all(f.recovery_s is not None for f in report.faults), report.faults
    start, end = report.start, report.end
    # Idle with 20 tunnels up: one SSH connection each, no channel or session left over.
    assert start.ssh_connections == end.ssh_connections == ENDPOINTS
    assert end.open_channels == 0 and end.server_channels == 0
    assert end.sshd_processes == start.sshd_processes
    # No growth beyond noise.
    assert end.fds <= start.fds + 5, (start, end)
    assert end.rss_kb <= start.rss_kb * 1.5 + 20_000, (start, end)
