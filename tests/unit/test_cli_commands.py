"""The command table: every command explains itself, and the light ones stay light."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from jobtunnel.daemon import cli
from jobtunnel.daemon.cli import COMMANDS, build_parser, main

HEAVY = ("asyncssh", "watchdog", "apscheduler", "pystray")

PROBE = """
import json, sys
from jobtunnel.daemon.cli import main
try:
    status = main(sys.argv[1:])
except SystemExit as exc:
    status = exc.code
heavy = [m for m in {heavy!r} if m in sys.modules]
sys.stdout.flush()
print(json.dumps({{"status": status, "heavy": heavy}}), file=sys.stderr)
"""


def imported_after(isolated_home: Path, *argv: str) -> tuple[object, list[str]]:
    """Run ``main(argv)`` in a fresh interpreter: its exit status and the heavy modules
    it loaded."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY), *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    report = json.loads(done.stderr.strip().splitlines()[-1])
    return report["status"], report["heavy"]


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["status", "--help"], ["status"], ["list", "--json"], ["config", "check"]],
)
def test_light_commands_import_no_heavy_module(isolated_home: Path, argv: list[str]) -> None:
    status, heavy = imported_after(isolated_home, *argv)
    assert status in (0, 1)  # 1: no daemon is running
    assert heavy == []


def test_the_probe_sees_heavy_imports(isolated_home: Path) -> None:
    # `keys show` needs asyncssh: the probe must notice it (or the test above proves nothing).
    status, heavy = imported_after(isolated_home, "keys", "show")
    assert status == 1 and "asyncssh" in heavy


def test_the_table_names_each_command_once_with_a_declaring_function() -> None:
    names = [c.name for c in COMMANDS]
    assert len(names) == len(set(names))
    for cmd in COMMANDS:
        module = importlib.import_module(f"jobtunnel.daemon.cli.{cmd.module}")
        assert callable(getattr(module, cmd.function)), cmd


@pytest.mark.parametrize("name", [c.name for c in COMMANDS])
def test_every_command_help_explains_it(
    name: str, isolated_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as done:
        main([name, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: jobtunnel {name}")
    description = text.split("\n\n")[1]
    # More than the one-line summary of the top-level list, for every command.
    assert len(description.split()) >= 8, description


def test_top_help_lists_every_command_in_its_group(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for cmd in COMMANDS:
        assert f"    {cmd.name} " in text and cmd.help in text
    assert text.index("  setting up:") < text.index("  the daemon:") < text.index("  endpoints:")


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["status"], "status"),
        (["--config", "status", "list"], "list"),
        (["--config=x.toml", "-v", "scan", "f"], "scan"),
        (["--conf", "scan", "trust", "x"], "trust"),
        (["-v", "--", "run"], "run"),
        (["--version"], None),
        ([], None),
    ],
)
def test_the_command_word_is_found_past_global_options(
    argv: list[str], command: str | None
) -> None:
    assert cli._chosen(argv) == command


def test_global_options_still_parse_around_the_command(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    args = build_parser("scan").parse_args(["--config", str(config), "-v", "scan", "a.log"])
    assert args.config == config and args.verbose and args.files == ["a.log"]
    run = build_parser("run").parse_args(["-v", "run"])
    assert run.verbose is True  # run's own -v does not reset the global one
