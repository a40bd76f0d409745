"""Under pythonw.exe (the Windows logon task) sys.stdout and sys.stderr are None: the CLI
must not raise, and what it would have printed goes to the log file."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from jobtunnel.daemon.cli import main
from jobtunnel.daemon.logs import log_file


@contextlib.contextmanager
def streams_gone() -> Iterator[None]:
    """stdout and stderr None, as under pythonw.exe. Set inside the test: pytest's capture
    puts its own streams back between a fixture's setup and the test."""
    saved = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = None  # type: ignore[assignment]
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


@pytest.fixture
def no_streams(isolated_home: Path) -> Iterator[Path]:
    """The log file; the root logger put back as it was afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield log_file()
    finally:
        for handler in root.handlers:
            if handler not in handlers:
                handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)


def test_results_go_to_the_log(no_streams: Path, isolated_home: Path) -> None:
    with streams_gone():
        assert main(["config", "path"]) == 0
    text = no_streams.read_text()
    assert str(isolated_home / ".config" / "jobtunnel" / "config.toml") in text
    assert "not created yet" in text


def test_errors_and_failures_go_to_the_log(no_streams: Path, tmp_path: Path) -> None:
    log = tmp_path / "job.log"
    log.write_text("ssh uprod_Good1@52.1.2.3\nssh uprod_Bad1@10.0.0.9\n")
    missing = tmp_path / "nope.log"
    with streams_gone():
        assert main(["scan", str(log), str(missing)]) == 2
        assert main(["status"]) == 1  # no daemon: a Fail
        assert main(["logs"]) == 0
    text = no_streams.read_text()
    assert "uprod_Good1@52.1.2.3:22" in text  # the table (stdout)
    assert "a private address" in text  # a rejection (stderr)
    assert f"{missing}: cannot read" in text
    assert "daemon is not running" in text


def test_a_usage_error_exits_2_and_is_logged(no_streams: Path) -> None:
    with streams_gone(), pytest.raises(SystemExit) as done:
        main(["bogus"])
    assert done.value.code == 2
    assert "usage error in `jobtunnel bogus`" in no_streams.read_text()
    with streams_gone(), pytest.raises(SystemExit) as shown:
        main(["status", "--help"])  # help to nowhere: no AttributeError either
    assert shown.value.code == 0


def test_init_does_not_prompt_without_stdout(
    no_streams: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Terminal:
        def isatty(self) -> bool:
            return True

        def readline(self) -> str:
            raise AssertionError("asked although nobody can see the question")

    monkeypatch.setattr(sys, "stdin", Terminal())
    with streams_gone():
        assert main(["init"]) == 0
    assert "jobtunnel service install" in no_streams.read_text()
