"""Detection work is linear in the input: counted, not timed.

Two halves. Every pattern the detector uses is checked structurally: an unbounded or long
repeat must be possessive (it cannot backtrack), so no search can go super-linear inside
the regex engine. And the characters the detector hands to pattern searches are counted
through a seam (each pattern is wrapped in a counting proxy) and bounded by a constant
times the input's length, however hostile the lines: nothing is rescanned per username,
per hint or per chunk.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from re import _constants as sre_constants  # type: ignore[attr-defined]
from re import _parser as sre_parse  # type: ignore[attr-defined]
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jobtunnel.daemon.core import address, detect
from jobtunnel.daemon.core.detect import Detector, Endpoint

# Longest greedy or lazy repeat allowed: anything longer must be possessive.
MAX_BACKTRACKING_REPEAT = 64
# Characters searched per input byte, at most (about 20 patterns, each line read once or
# twice: once in a slice of an over-long line and again when it ends).
PER_BYTE = 64
SLACK = 1 << 16


class Meter:
    def __init__(self) -> None:
        self.chars = 0


class Counted:
    """A compiled pattern that adds the length of every text it is asked to search."""

    def __init__(self, pattern: re.Pattern[Any], meter: Meter) -> None:
        self._pattern = pattern
        self._meter = meter

    def _count(self, string: Any, pos: int = 0, endpos: int | None = None) -> None:
        end = len(string) if endpos is None else min(endpos, len(string))
        self._meter.chars += max(0, end - pos)

    def search(self, string: Any, *args: int) -> Any:
        self._count(string, *args)
        return self._pattern.search(string, *args)

    def match(self, string: Any, *args: int) -> Any:
        self._count(string, *args)
        return self._pattern.match(string, *args)

    def fullmatch(self, string: Any, *args: int) -> Any:
        self._count(string, *args)
        return self._pattern.fullmatch(string, *args)

    def finditer(self, string: Any, *args: int) -> Iterator[Any]:
        self._count(string, *args)
        return self._pattern.finditer(string, *args)

    def findall(self, string: Any, *args: int) -> Any:
        self._count(string, *args)
        return self._pattern.findall(string, *args)

    def sub(self, repl: Any, string: Any, count: int = 0) -> Any:
        self._count(string)
        return self._pattern.sub(repl, string, count)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pattern, name)


class CountedRe:
    """Stands in for the ``re`` module inside detect: patterns compiled there are counted."""

    def __init__(self, meter: Meter) -> None:
        self._meter = meter

    def compile(self, pattern: Any, flags: int = 0) -> Counted:
        return Counted(re.compile(pattern, flags), self._meter)

    def finditer(self, pattern: Any, string: Any, flags: int = 0) -> Iterator[Any]:
        return self.compile(pattern, flags).finditer(string)

    def search(self, pattern: Any, string: Any, flags: int = 0) -> Any:
        return self.compile(pattern, flags).search(string)

    def fullmatch(self, pattern: Any, string: Any, flags: int = 0) -> Any:
        return self.compile(pattern, flags).fullmatch(string)

    def sub(self, pattern: Any, repl: Any, string: Any, count: int = 0, flags: int = 0) -> Any:
        return self.compile(pattern, flags).sub(repl, string, count)

    def __getattr__(self, name: str) -> Any:
        return getattr(re, name)


def module_patterns() -> list[tuple[str, re.Pattern[Any]]]:
    """Every compiled pattern detection uses: module level, and a Detector's own."""
    found = [
        (f"{module.__name__}.{name}", value)
        for module in (detect, address)
        for name, value in vars(module).items()
        if isinstance(value, re.Pattern)
    ]
    detector = Detector("f")
    found += [
        (f"Detector.{name}", value)
        for name, value in vars(detector).items()
        if isinstance(value, re.Pattern)
    ]
    return found


def measure(chunks: list[bytes]) -> tuple[int, list[Any]]:
    """Characters searched while detecting ``chunks``, and the findings."""
    meter = Meter()
    with pytest.MonkeyPatch.context() as patch:
        for module in (detect, address):
            for name, value in list(vars(module).items()):
                if isinstance(value, re.Pattern):
                    patch.setattr(module, name, Counted(value, meter))
            patch.setattr(module, "re", CountedRe(meter), raising=False)
        detector = Detector("hostile")
        for name, value in list(vars(detector).items()):
            if isinstance(value, re.Pattern):
                setattr(detector, name, Counted(value, meter))
        findings: list[Any] = []
        for chunk in chunks:
            findings += detector.feed(chunk)
        findings += detector.flush() + detector.close()
    return meter.chars, findings


def backtracking_repeats(pattern: re.Pattern[Any]) -> list[str]:
    """Repeats in ``pattern`` that may backtrack over more than MAX_BACKTRACKING_REPEAT items."""
    bad: list[str] = []

    def walk(items: Any) -> None:
        for op, av in items:
            if op in (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT):
                low, high, body = av
                if high == sre_constants.MAXREPEAT or high > MAX_BACKTRACKING_REPEAT:
                    bad.append(f"{op} {{{low},{high}}} of {body}")
                walk(body)
            elif op is sre_constants.POSSESSIVE_REPEAT:
                walk(av[2])
            elif op is sre_constants.SUBPATTERN:
                walk(av[3])
            elif op is sre_constants.BRANCH:
                for branch in av[1]:
                    walk(branch)
            elif op is sre_constants.ATOMIC_GROUP:
                walk(av)
            elif op in (sre_constants.ASSERT, sre_constants.ASSERT_NOT):
                walk(av[1])

    walk(sre_parse.parse(pattern.pattern, pattern.flags))
    return bad


def test_the_patterns_are_found() -> None:
    names = {name for name, _ in module_patterns()}
    assert {"jobtunnel.daemon.core.detect._PORT_OPTION", "Detector._pair"} <= names


@pytest.mark.parametrize(("name", "pattern"), module_patterns(), ids=lambda v: str(v)[:40])
def test_no_pattern_can_backtrack_over_a_long_run(name: str, pattern: re.Pattern[Any]) -> None:
    assert backtracking_repeats(pattern) == [], name


def test_many_usernames_on_one_line_cost_linear_work() -> None:
    line = b" ".join(b"uprod_u%d 52.1.%d.%d" % (i, i // 250, i % 250 + 1) for i in range(2000))
    data = b"ssh host: 52.9.9.9 port 22\n" + line + b"\n"
    chars, _ = measure([data])
    assert chars <= PER_BYTE * len(data) + SLACK, f"{chars} chars searched for {len(data)} bytes"


# Pieces of lines built to make naive patterns backtrack or a naive detector rescan.
HOSTILE = [
    "port",
    "Port",
    " ",
    "    ",
    "\t",
    ":",
    "=",
    "#",
    "number",
    "-p",
    "-o",
    "'",
    "uprod_a1",
    "udeprod_B2",
    "uprod_",
    "u",
    "@",
    "52.1.2.3",
    "1.",
    "10.0.0.1",
    "host",
    "Host:",
    "ip address",
    "master node",
    "public ",
    "connecting to ",
    "[",
    "]",
    "::",
    "a.b-",
    "ab",
    "<a ",
    ">",
    "&amp;",
    "\x1b[",
    "\x1b]",
    "http://",
    "https://a/notebooks/",
    "?token=",
    "/enc/",
    "/",
    "ssh ",
]

hostile_line = st.lists(
    st.tuples(st.sampled_from(HOSTILE), st.integers(1, 300)), min_size=1, max_size=12
).map(lambda parts: "".join(piece * n for piece, n in parts))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lines=st.lists(hostile_line, min_size=1, max_size=12),
    cuts=st.lists(st.integers(0, 1 << 16), max_size=6),
)
def test_hostile_lines_cost_linear_work_in_any_chunking(lines: list[str], cuts: list[int]) -> None:
    data = "\n".join(lines).encode()
    bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    chunks = [data[a:b] for a, b in itertools.pairwise(bounds)]
    chars, split = measure(chunks)
    assert chars <= PER_BYTE * len(data) + SLACK, f"{chars} chars searched for {len(data)} bytes"
    _, whole = measure([data])
    assert split == whole


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "line",
    [
        b"uprod_a1 port" + b" " * 5000 + b"x",
        b"-o Port" + b" " * 5000 + b"x uprod_a1",
        b"uprod_a1 master node" + b" " * 5000 + b"x",
        b"uprod_a1 connecting to a " + b"[" * 5000,
        b"ssh uprod_a1 " + b"a.b-" * 5000 + b"/",
    ],
    ids=["port-spaces", "o-port-spaces", "master-spaces", "brackets", "dotted-run"],
)
def test_backtracking_lines_finish_and_the_next_endpoint_is_found(line: bytes) -> None:
    detector = Detector("hostile")
    findings = detector.feed(line + b"\n") + detector.feed(b"ssh uprod_Ok1@52.1.2.3\n")
    findings += detector.close()
    assert ("uprod_Ok1", "52.1.2.3", 22) in {f.key for f in findings if isinstance(f, Endpoint)}


@pytest.mark.timeout(60)
def test_a_padded_table_with_a_port_column_finishes() -> None:
    header = b"Job        Host" + b" " * 400 + b"Port" + b" " * 400 + b"User\n"
    row = b"run        52.1.2.3" + b" " * 396 + b"22  " + b" " * 400 + b"uprod_Tab1\n"
    detector = Detector("table.txt")
    findings = detector.feed(header + row * 50) + detector.close()
    assert ("uprod_Tab1", "52.1.2.3", 22) in {f.key for f in findings if isinstance(f, Endpoint)}


def test_usernames_in_paths_are_not_read_closely() -> None:
    """A solver log names the job user's folders on every 60th line: those lines (and the
    lines around them) are only counted, so most of the log is never searched."""
    noise = b"2026-11-24T09:00:00Z INFO  solver: time step 1 Courant max 0.48 residual 1e-05\n"
    path = b"2026-11-24T09:00:00Z INFO  reading /enc/uprod_qpWia/work/case_1/constant/faces\n"
    data = (path + noise * 59) * 200 + b"ssh -p 32100 uprod_Last1@52.1.2.3\n"
    chars, findings = measure([data])
    assert {f.key for f in findings if isinstance(f, Endpoint)} == {
        ("uprod_Last1", "52.1.2.3", 32100)
    }
    assert chars < len(data) // 20, f"{chars} chars searched for {len(data)} bytes"
