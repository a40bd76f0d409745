"""Read whole files through the detector: what ``jobtunnel scan`` and ``add FILE`` do."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..config import DetectConfig
from ..core.detect import Detector, Endpoint, EndpointSet, Rejection

__all__ = ["CHUNK", "scan_file"]

CHUNK = 1 << 20


def scan_file(
    path: Path,
    detect: DetectConfig,
    rejected: Callable[[Rejection], None],
    progress: Callable[[int], None] | None = None,
) -> list[Endpoint]:
    """Endpoints still current at the end of ``path``, read in CHUNK pieces.

    Rejections go to ``rejected``; ``progress`` gets the bytes read so far. OSError from
    opening or reading the file propagates.
    """
    detector = Detector(
        str(path),
        username_pattern=detect.username_pattern,
        allow_private_addresses=detect.allow_private_addresses,
    )
    current = EndpointSet()

    def take(findings: list[Endpoint | Rejection]) -> None:
        for finding in findings:
            if isinstance(finding, Rejection):
                rejected(finding)
            else:
                current.add(finding)

    with path.open("rb") as handle:
        done = 0
        while chunk := handle.read(CHUNK):
            done += len(chunk)
            if progress is not None:
                progress(done)
            take(detector.feed(chunk))
    take(detector.close())
    return list(current)
