"""The detection thread: findings come back on the loop, files take turns, restarts reset."""

from __future__ import annotations

import asyncio
from pathlib import Path

from jobtunnel.daemon.config import DetectConfig
from jobtunnel.daemon.core.detect import Endpoint
from jobtunnel.daemon.process.detection import DetectionWorker
from jobtunnel.daemon.process.watch import LogUpdate


def test_findings_of_every_file_reach_the_loop_and_a_restart_starts_over() -> None:
    async def go() -> list[tuple[str, str, int]]:
        loop = asyncio.get_running_loop()
        seen: list[tuple[str, str, int]] = []
        done = asyncio.Event()

        def on_findings(findings: list[object]) -> None:
            assert asyncio.get_running_loop() is loop  # called on the loop thread
            seen.extend(f.key for f in findings if isinstance(f, Endpoint))
            if len(seen) >= 3:
                done.set()

        worker = DetectionWorker(DetectConfig(), on_findings, slice_bytes=4096, max_backlog=1 << 16)
        big, small = Path("/logs/big.log"), Path("/logs/small.log")
        noise = b"solver: time step 1 residual 1e-05\n" * 20_000  # many slices
        worker.submit(LogUpdate(big, noise + b"ssh uprod_Big1@52.1.2.3\n", restart=True))
        worker.submit(LogUpdate(small, b"ssh uprod_Small1@52.1.2.4\n", restart=True))
        # A replaced file: the half line before the restart must not join the new bytes.
        worker.submit(LogUpdate(small, b"ssh uprod_Half", restart=False))
        worker.submit(LogUpdate(small, b"2@52.1.2.5\nssh uprod_New1@52.1.2.6\n", restart=True))
        await worker.room()
        await asyncio.wait_for(done.wait(), 30)
        await worker.stop()
        return seen

    seen = asyncio.run(go())
    assert set(seen) == {
        ("uprod_Small1", "52.1.2.4", 22),
        ("uprod_New1", "52.1.2.6", 22),
        ("uprod_Big1", "52.1.2.3", 22),
    }
    # The small file was not held back behind the big one.
    assert seen[-1] == ("uprod_Big1", "52.1.2.3", 22)
