"""Each platform seam's Windows and macOS branch, run here with the OS calls injected.

The process stays a Linux process: the seams take the platform (or the OS call) as an
argument, and these tests pass the other platforms' values. What only exists on the other
OS (``os.startfile``, ``msvcrt``, AppKit) is checked by ``mypy --platform win32|darwin``.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from jobtunnel.daemon.api import wire
from jobtunnel.daemon.files import (
    _posix_permission_problem,
    private_dir_posix,
    private_dir_windows,
)
from jobtunnel.daemon.process.systemd import Notifier
from jobtunnel.daemon.setup import doctor, keys, loginservice
from jobtunnel.tray import desktop, notify

# -- private files and folders --------------------------------------------------------------


def test_windows_private_dir_is_the_profile_s(tmp_path: Path) -> None:
    profile = tmp_path / "Users" / "me"
    inside = profile / "AppData" / "Local" / "jobtunnel" / "run"
    assert private_dir_windows(inside, str(profile)) is True
    assert inside.is_dir()
    # Outside the profile (a moved XDG dir, a shared drive): reported as shared.
    outside = tmp_path / "Public" / "jobtunnel"
    assert private_dir_windows(outside, str(profile)) is False
    assert private_dir_windows(inside, None) is False
    # A path that only looks as if it were inside, through "..".
    sneaky = profile / ".." / "other" / "jobtunnel"
    assert private_dir_windows(sneaky, str(profile)) is False


def test_posix_private_dir_tightens_but_never_a_shared_folder(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o755)
    assert private_dir_posix(mine) is True
    assert mine.stat().st_mode & 0o777 == 0o700
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    assert private_dir_posix(shared) is False
    assert shared.stat().st_mode & 0o7777 == 0o1777


def test_key_permissions_checked_only_for_the_owner(tmp_path: Path) -> None:
    key = tmp_path / "id_ed25519"
    key.write_text("k")
    key.chmod(0o644)
    uid = key.stat().st_uid
    problem = _posix_permission_problem(key, uid)
    assert problem is not None and "chmod 600" in problem
    assert _posix_permission_problem(key, uid + 1) is None  # another user's key: OpenSSH too
    key.chmod(0o600)
    assert _posix_permission_problem(key, uid) is None


# -- the control API transport ------------------------------------------------------------


def test_windows_control_api_is_tcp_with_a_token_file() -> None:
    assert wire.default_transport("nt") == "tcp"
    assert wire.default_transport("posix") == "unix"
    assert wire.default_path("tcp").name == "control.json"


# -- systemd notify -------------------------------------------------------------------------


@pytest.mark.parametrize("platform", ["win32", "darwin"])
def test_systemd_notify_is_a_no_op_off_linux(tmp_path: Path, platform: str) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        server.setblocking(False)
        env = {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "2000000"}
        off = Notifier(env, platform=platform)
        assert not off.enabled and off.watchdog_interval is None
        off.ready("up")
        with pytest.raises(BlockingIOError):
            server.recv(100)
        on = Notifier(env, platform="linux")  # the same environment on Linux does speak
        assert on.enabled and on.watchdog_interval == 1.0
        on.ready("up")
        assert server.recv(100) == b"READY=1\nSTATUS=up"
        on.close()


# -- commands per platform ------------------------------------------------------------------


def test_login_service_platform_names() -> None:
    assert loginservice.host_platform("win32") == "windows"
    assert loginservice.host_platform("darwin") == "macos"
    assert loginservice.host_platform("linux") == "linux"


def test_clipboard_tools_per_platform() -> None:
    assert keys.clipboard_tools("darwin", {}) == [["pbcopy"]]
    assert keys.clipboard_tools("win32", {"DISPLAY": ":0"}) == [["clip"]]
    assert keys.clipboard_tools("linux", {"WAYLAND_DISPLAY": "w"})[0] == ["wl-copy"]
    assert keys.clipboard_tools("linux", {}) == []
    assert desktop.clipboard_commands("darwin") == [["pbcopy"]]
    assert desktop.clipboard_commands("win32") == [["clip"]]
    assert desktop.clipboard_commands("linux")[0] == ["wl-copy"]


def test_open_command_per_platform() -> None:
    folder = Path("/Users/me/JobLogs")
    assert desktop.open_command(folder, "darwin", lambda _: None) == ["open", str(folder)]
    # Windows opens with os.startfile, Linux without xdg-open falls back to the browser.
    assert desktop.open_command(folder, "win32", lambda _: "/bin/x") is None
    assert desktop.open_command(folder, "linux", lambda _: None) is None
    assert desktop.open_command(folder, "linux", lambda _: "/usr/bin/xdg-open") == [
        "xdg-open",
        str(folder),
    ]


def test_notifications_need_no_service_on_windows_and_macos() -> None:
    assert notify.notification_service("win32") is None
    assert notify.notification_service("darwin") is None


# -- doctor -----------------------------------------------------------------------------------


def _no_tray_module() -> object:
    raise ImportError("pystray not here")


@pytest.mark.parametrize("platform", ["win32", "darwin"])
def test_doctor_tray_check_on_windows_and_macos(platform: str) -> None:
    check = doctor.check_tray(platform, {}, _no_tray_module)
    assert check.detail == f"{platform}: the native tray"
    linux = doctor.check_tray("linux", {}, _no_tray_module)
    assert linux.detail.startswith("none: no display")


def test_doctor_fixes_in_each_platform_s_words() -> None:
    assert doctor.port_holder_command(8888, "win32") == "netstat -ano | findstr :8888"
    assert doctor.port_holder_command(8888, "darwin") == "lsof -nP -iTCP:8888 -sTCP:LISTEN"
    assert doctor.port_holder_command(8888, "linux") == "ss -ltnp 'sport = :8888'"
    assert doctor.start_daemon_command("win32") == "schtasks /Run /TN jobtunnel"
    assert "com.jobtunnel.daemon" in doctor.start_daemon_command("darwin")
    assert doctor.start_daemon_command("linux") == "systemctl --user start jobtunnel"
    assert doctor.start_daemon_command("win32", installed=False).startswith("jobtunnel run")
    assert doctor.service_file("win32").name == "jobtunnel.xml"
    assert doctor.service_file("darwin").name == "com.jobtunnel.daemon.plist"
