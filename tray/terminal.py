"""A terminal window running a command (the tray's "Open terminal").

:func:`terminal_command` finds the terminal and the words that make it run the command:
Linux and other X11/Wayland desktops try ``$TERMINAL``, Debian's ``x-terminal-emulator``,
then common terminals; macOS asks Terminal through ``osascript``; Windows uses Windows
Terminal (``wt``), else a new ``cmd`` console. Pure: the platform, the environment and
``which`` are passed in. :func:`open_terminal` spawns the result.
"""

from __future__ import annotations

import logging
import shlex
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

__all__ = ["NO_TERMINAL", "Launch", "open_terminal", "terminal_command"]

log = logging.getLogger(__name__)

Which = Callable[[str], "str | None"]

NO_TERMINAL = (
    "No terminal emulator found: set $TERMINAL (for example TERMINAL=xterm) or install one "
    "(gnome-terminal, konsole, xfce4-terminal, xterm)"
)
# How each terminal is told to run a program with its arguments (not a shell string).
LINUX_TERMINALS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("x-terminal-emulator", ("-e",)),
    ("gnome-terminal", ("--",)),
    ("konsole", ("-e",)),
    ("xfce4-terminal", ("-x",)),
    ("mate-terminal", ("-x",)),
    ("kitty", ()),
    ("alacritty", ("-e",)),
    ("foot", ()),
    ("wezterm", ("start", "--")),
    ("xterm", ("-e",)),
)


@dataclass(frozen=True)
class Launch:
    """What to spawn; ``new_console``: Windows must give it a console of its own."""

    argv: tuple[str, ...]
    new_console: bool = False


def _applescript_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def terminal_command(
    command: Sequence[str], platform: str, env: Mapping[str, str], which: Which
) -> Launch | None:
    """How to run ``command`` in a new terminal window; None when there is no terminal."""
    words = tuple(command)
    if platform == "win32":
        wt = which("wt")
        if wt is not None:
            # wt reads ';' as its own separator: escaped, it reaches the program.
            return Launch((wt, *(w.replace(";", "\\;") for w in words)))
        # Popen quotes each word; cmd keeps them, the first not being a quote.
        return Launch(("cmd.exe", "/k", *words), new_console=True)
    if platform == "darwin":
        if which("osascript") is None:
            return None
        script = _applescript_string(shlex.join(words))
        return Launch(
            (
                "osascript",
                "-e",
                f'tell application "Terminal" to do script {script}',
                "-e",
                'tell application "Terminal" to activate',
            )
        )
    chosen = env.get("TERMINAL", "").strip()
    if chosen:
        # $TERMINAL may carry its own options ("kitty --single-instance").
        parts = shlex.split(chosen)
        found = which(parts[0]) if parts else None
        if found is not None:
            name = parts[0].rsplit("/", 1)[-1]
            flags = dict(LINUX_TERMINALS).get(name, ("-e",))
            return Launch((found, *parts[1:], *flags, *words))
        log.warning("$TERMINAL=%s is not a program here; trying the usual terminals", chosen)
    for name, flags in LINUX_TERMINALS:
        found = which(name)
        if found is not None:
            return Launch((found, *flags, *words))
    return None


def open_terminal(command: Sequence[str], which: Which, env: Mapping[str, str]) -> bool:
    """Open a terminal running ``command``; False (and nothing spawned) when none exists."""
    launch = terminal_command(command, sys.platform, env, which)
    if launch is None:
        return False
    kwargs: dict[str, object] = {}
    if sys.platform == "win32" and launch.new_console:
        kwargs["creationflags"] = subprocess.CREATE_NEW_CONSOLE
    elif sys.platform != "win32":
        kwargs["start_new_session"] = True
    subprocess.Popen(  # type: ignore[call-overload]
        list(launch.argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        close_fds=True,
        **kwargs,
    )
    log.info("opened a terminal: %s", launch.argv[0])
    return True
