"""The desktop side of menu actions: open files and URLs, the clipboard, a file chooser,
and starting the daemon as a detached process."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import webbrowser
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "choose_file",
    "clipboard_commands",
    "copy_text",
    "export_ppk",
    "open_command",
    "open_path",
    "open_url",
    "spawn_daemon",
    "start_program",
]

log = logging.getLogger(__name__)


def _detached(argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    kwargs: dict[str, object] = {}
    if sys.platform == "win32":
        kwargs["creationflags"] = subprocess.DETACHED_PROCESS | subprocess.CREATE_NEW_PROCESS_GROUP
    else:
        kwargs["start_new_session"] = True
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        close_fds=True,
        **kwargs,
    )


def open_command(
    path: Path, platform: str = sys.platform, which: Callable[[str], str | None] = shutil.which
) -> list[str] | None:
    """The command that opens ``path`` in its default application; None: ask the browser.

    Windows opens with ``os.startfile`` (no command): None there too.
    """
    if platform == "darwin":
        return ["open", str(path)]
    if platform != "win32" and which("xdg-open"):
        return ["xdg-open", str(path)]
    return None


def open_path(path: Path) -> None:
    """Open a file or folder with the desktop's default application."""
    if sys.platform == "win32":
        os.startfile(path)
    else:
        command = open_command(path)
        if command is not None:
            _detached(command)
        else:
            webbrowser.open(path.resolve().as_uri())


def open_url(url: str) -> None:
    if not webbrowser.open(url):
        log.warning("no browser could open %s", url)


def copy_text(text: str) -> bool:
    """Put ``text`` on the clipboard; False when no way to do it was found."""
    if "gi.repository.Gtk" in sys.modules:
        from gi.repository import Gdk, GLib, Gtk

        def put() -> bool:
            clipboard = Gtk.Clipboard.get(Gdk.SELECTION_CLIPBOARD)
            clipboard.set_text(text, -1)
            clipboard.store()
            return False

        GLib.idle_add(put)
        return True
    for argv in clipboard_commands():
        if shutil.which(argv[0]) is None:
            continue
        data = text.encode("utf-16-le" if argv[0] == "clip" else "utf-8")
        try:
            subprocess.run(argv, input=data, check=True, timeout=5)
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning("%s could not take the text: %s", argv[0], exc)
            continue
        return True
    return False


def clipboard_commands(platform: str = sys.platform) -> list[list[str]]:
    """Clipboard tools to try, best first; each reads the text on stdin."""
    if platform == "win32":
        return [["clip"]]
    if platform == "darwin":
        return [["pbcopy"]]
    return [["wl-copy"], ["xclip", "-selection", "clipboard"], ["xsel", "-bi"]]


def choose_file(folder: Path, done: Callable[[Path | None], None]) -> bool:
    """Ask for a job log with GTK's file chooser; False when there is none to show.

    ``done`` gets the chosen file, or None when the user cancelled.
    """
    if "gi.repository.Gtk" not in sys.modules:
        return False
    from gi.repository import GLib, Gtk

    def ask() -> bool:
        dialog = Gtk.FileChooserDialog(title="Add job log", action=Gtk.FileChooserAction.OPEN)
        dialog.add_buttons("_Cancel", Gtk.ResponseType.CANCEL, "_Add", Gtk.ResponseType.ACCEPT)
        if folder.is_dir():
            dialog.set_current_folder(str(folder))
        answer = dialog.run()
        chosen = dialog.get_filename() if answer == Gtk.ResponseType.ACCEPT else None
        dialog.destroy()
        done(Path(chosen) if chosen else None)
        return False

    GLib.idle_add(ask)
    return True


def start_program(argv: list[str]) -> int:
    """Start a program detached from the tray (PuTTY, say); its pid."""
    return _detached(argv).pid


def export_ppk(identity_file: str, ppk: str) -> str | None:
    """Write ``ppk`` from ``identity_file`` with ``jobtunnel keys export``; None when done,
    else why not (an encrypted key needs its passphrase typed on a terminal)."""
    argv = [sys.executable, "-m", "jobtunnel.daemon", "keys", "export", "--ppk", ppk]
    argv += ["--file", identity_file]
    try:
        done = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return str(exc)
    if done.returncode == 0:
        return None
    said = (done.stderr or done.stdout).strip().splitlines()
    return said[-1] if said else f"exit status {done.returncode}"


def spawn_daemon(config: Path | None = None) -> int:
    """Start ``python -m jobtunnel.daemon run`` detached (it logs to its own file)."""
    env = dict(os.environ)
    if config is not None:
        env["JOBTUNNEL_CONFIG"] = str(config)
    proc = _detached([sys.executable, "-m", "jobtunnel.daemon", "run"], env)
    log.info("started the daemon (pid %d)", proc.pid)
    return proc.pid
