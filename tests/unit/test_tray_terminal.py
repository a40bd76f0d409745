"""The tray's "Open terminal": which terminal each platform gets and how it is told to
run ssh (the OS calls injected), and one clear message when there is none."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from jobtunnel.tray import app as tray_app
from jobtunnel.tray import terminal
from jobtunnel.tray.menu import Action
from jobtunnel.tray.terminal import NO_TERMINAL, Launch, terminal_command

SSH = ("ssh", "-F", "/home/u/My Files/ssh_config", "rescale-qpWia")


def which_of(*present: str) -> Callable[[str], str | None]:
    return lambda name: f"/usr/bin/{name}" if name in present else None


@pytest.mark.parametrize(
    ("present", "env", "argv"),
    [
        (("x-terminal-emulator", "xterm"), {}, ("/usr/bin/x-terminal-emulator", "-e", *SSH)),
        (("gnome-terminal", "xterm"), {}, ("/usr/bin/gnome-terminal", "--", *SSH)),
        (("konsole",), {}, ("/usr/bin/konsole", "-e", *SSH)),
        (("xfce4-terminal",), {}, ("/usr/bin/xfce4-terminal", "-x", *SSH)),
        (("kitty",), {}, ("/usr/bin/kitty", *SSH)),
        (("xterm",), {}, ("/usr/bin/xterm", "-e", *SSH)),
        # $TERMINAL first, with its own options; flags by its name.
        (
            ("xterm", "kitty"),
            {"TERMINAL": "kitty --single-instance"},
            ("/usr/bin/kitty", "--single-instance", *SSH),
        ),
        (("xterm", "myterm"), {"TERMINAL": "myterm"}, ("/usr/bin/myterm", "-e", *SSH)),
        # A $TERMINAL that is not installed: the usual ones.
        (("xterm",), {"TERMINAL": "nonesuch"}, ("/usr/bin/xterm", "-e", *SSH)),
    ],
)  # fmt: skip
def test_linux_terminals(
    present: tuple[str, ...], env: dict[str, str], argv: tuple[str, ...]
) -> None:
    assert terminal_command(SSH, "linux", env, which_of(*present)) == Launch(argv)


def test_no_terminal_anywhere() -> None:
    assert terminal_command(SSH, "linux", {"TERMINAL": ""}, which_of()) is None
    assert terminal_command(SSH, "darwin", {}, which_of()) is None


def test_macos_asks_terminal_through_osascript() -> None:
    launch = terminal_command(SSH, "darwin", {}, which_of("osascript"))
    assert launch is not None
    assert launch.argv[:2] == ("osascript", "-e")
    assert launch.argv[2] == (
        'tell application "Terminal" to do script '
        "\"ssh -F '/home/u/My Files/ssh_config' rescale-qpWia\""
    )
    assert launch.argv[3:] == ("-e", 'tell application "Terminal" to activate')
    quoted = terminal_command(("echo", 'a"b\\c'), "darwin", {}, which_of("osascript"))
    assert quoted is not None and 'do script "echo \'a\\"b\\\\c\'"' in quoted.argv[2]


def test_macos_script_runs_in_a_real_shell_as_the_words(tmp_path: Path) -> None:
    """The shell line inside the AppleScript string is the command, word for word."""
    words = ("printf", "%s|", "a b", "it's", '"q"', "$HOME", "`x`")
    launch = terminal_command(words, "darwin", {}, which_of("osascript"))
    assert launch is not None
    script = launch.argv[2].removeprefix('tell application "Terminal" to do script ')
    line = script[1:-1].replace('\\"', '"').replace("\\\\", "\\")  # AppleScript unquoted
    out = subprocess.run(["sh", "-c", line], capture_output=True, text=True, check=True)
    assert out.stdout == 'a b|it\'s|"q"|$HOME|`x`|'


def test_windows_terminal_then_cmd() -> None:
    wt = terminal_command(SSH, "win32", {}, which_of("wt"))
    assert wt == Launch(("/usr/bin/wt", *SSH))
    semi = terminal_command(("ssh", "a;b"), "win32", {}, which_of("wt"))
    assert semi is not None and semi.argv[-1] == "a\\;b"  # wt's separator, escaped
    cmd = terminal_command(SSH, "win32", {}, which_of())
    assert cmd == Launch(("cmd.exe", "/k", *SSH), new_console=True)


@pytest.mark.skipif(sys.platform != "linux", reason="spawns a real program")
def test_open_terminal_spawns_the_program(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    fake = tmp_path / "xterm"
    fake.write_text(f'#!/bin/sh\n[ "$1" = -e ] && shift; "$@" > {marker}\n')
    fake.chmod(0o755)
    opened = terminal.open_terminal(
        ("echo", "hi"), lambda n: str(fake) if n == "xterm" else None, {}
    )
    assert opened
    for _ in range(200):
        if marker.exists() and marker.read_text():
            break
        subprocess.run(["sleep", "0.05"], check=True)
    assert marker.read_text() == "hi\n"


def test_tray_without_a_terminal_says_so_once_and_spawns_nothing(
    isolated_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = tray_app.TrayApp()
    told: list[tuple[str, str]] = []
    monkeypatch.setattr(app, "tell", lambda title, message: told.append((title, message)))
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setenv("TERMINAL", "")
    spawned: list[object] = []
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: spawned.append(a))
    app.dispatch(Action("open_terminal", SSH))
    assert told == [("Cannot open a terminal", NO_TERMINAL)]
    assert spawned == []
    assert app.context().ssh_config.endswith("jobtunnel/ssh_config")
