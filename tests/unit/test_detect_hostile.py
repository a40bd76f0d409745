"""Hostile input: long lines built to make a naive regex backtrack must stay fast."""

from __future__ import annotations

import pytest
from jobtunnel.daemon.core.detect import Detector, Endpoint

SIZE = 2 << 20  # bytes per hostile line


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "unit",
    [
        b"u",  # letters that almost start a username
        b"uprod_",
        b"uprod_a@",
        b"1.1.",
        b"http://",
        b"https://a/notebooks/",
        b"<a ",
        b"\x1b]",
        b"port ",
        b"ab:",
        b"a.b-",
        b"&amp;",
    ],
)
def test_pathological_single_lines_finish_and_the_next_endpoint_is_found(unit: bytes) -> None:
    detector = Detector("hostile")
    line = unit * (SIZE // len(unit))
    findings = detector.feed(line + b"\n") + detector.feed(b"ssh uprod_Ok1@52.1.2.3\n")
    findings += detector.close()
    assert ("uprod_Ok1", "52.1.2.3", 22) in {f.key for f in findings if isinstance(f, Endpoint)}
