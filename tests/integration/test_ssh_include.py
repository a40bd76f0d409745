"""``jobtunnel ssh-config --install/--uninstall`` on real files: one Include line at the top
of ~/.ssh/config, a backup, idempotent; bad input changes nothing and says why once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from jobtunnel.daemon import paths
from jobtunnel.daemon.setup.sshinclude import SshIncludeError, install, uninstall

from tests.helpers.deps import dependency_missing, require_tool

USER_TEXT = "# my hosts\nHost build\n    HostName build.example.com\n    User me\n"


def yes(_: str) -> bool:
    return True


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())} if folder.exists() else {}


def test_install_adds_one_line_at_the_top_backs_up_and_is_idempotent(
    isolated_home: Path,
) -> None:
    require_tool("ssh", "openssh-client")
    config = isolated_home / ".ssh" / "config"
    config.parent.mkdir(mode=0o700)
    config.write_text(USER_TEXT)
    config.chmod(0o644)
    asked: list[str] = []

    done = install(lambda q: asked.append(q) or True)
    line = f'Include "{paths.ssh_config_file()}"  # added by `jobtunnel ssh-config --install`'
    assert done.changed and asked and line in asked[0]
    assert config.read_text() == line + "\n" + USER_TEXT
    assert config.stat().st_mode & 0o777 == 0o644  # the user's mode is kept
    assert done.backup is not None and done.backup.read_text() == USER_TEXT
    # OpenSSH reads it, and the user's own block still applies.
    got = subprocess.run(
        ["ssh", "-G", "-F", str(config), "build"], capture_output=True, text=True, check=True
    ).stdout
    assert "hostname build.example.com" in got

    before = _snapshot(config.parent)
    again = install(yes)
    assert not again.changed and "already includes" in again.message
    assert _snapshot(config.parent) == before  # no second line, no second backup

    removed = uninstall(yes)
    assert removed.changed
    assert config.read_text() == USER_TEXT
    gone = uninstall(yes)
    assert not gone.changed and "no line added by jobtunnel" in gone.message


def test_install_without_ssh_folder_creates_it_private(isolated_home: Path) -> None:
    assert install(yes).changed
    folder = isolated_home / ".ssh"
    assert folder.stat().st_mode & 0o777 == 0o700
    assert (folder / "config").stat().st_mode & 0o777 == 0o600
    assert [p.name for p in folder.iterdir()] == ["config"]  # nothing to back up


def test_include_the_user_wrote_already_is_left_alone(isolated_home: Path) -> None:
    config = isolated_home / ".ssh" / "config"
    config.parent.mkdir()
    text = f"Host *\n  Include {paths.ssh_config_file()}\n"
    config.write_text(text)
    outcome = install(yes)
    assert not outcome.changed and f"{config}:2 already includes" in outcome.message
    assert config.read_text() == text and len(list(config.parent.iterdir())) == 1


@pytest.mark.parametrize(
    "text",
    [
        "Host build\n    NoSuchOption yes\n",  # ssh -G: Bad configuration option
        "Host build\n    Port seventy\n",  # ssh -G: bad number
        "Host\n",  # no value
        'Host build\n    IdentityFile "~/.ssh/id\n',  # unclosed quote
    ],
)
def test_a_config_openssh_cannot_read_changes_nothing(isolated_home: Path, text: str) -> None:
    require_tool("ssh", "openssh-client")
    config = isolated_home / ".ssh" / "config"
    config.parent.mkdir()
    config.write_text(text)
    with pytest.raises(SshIncludeError, match="nothing changed") as caught:
        install(yes)
    assert str(config) in str(caught.value) and "\n" not in str(caught.value)
    assert _snapshot(config.parent) == {"config": text.encode()}


def test_declined_or_no_terminal_changes_nothing(isolated_home: Path) -> None:
    config = isolated_home / ".ssh" / "config"
    config.parent.mkdir()
    config.write_text(USER_TEXT)
    assert install(lambda _: False).message == "nothing changed"
    with pytest.raises(SshIncludeError, match="add --yes"):
        install(lambda _: None)
    assert _snapshot(config.parent) == {"config": USER_TEXT.encode()}
    cli = subprocess.run(
        [sys.executable, "-m", "jobtunnel.daemon", "ssh-config", "--install"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert cli.returncode == 1
    assert cli.stderr.strip().splitlines()[-1] == (
        "jobtunnel: not asking without a terminal: add --yes (nothing changed)"
    )
    assert _snapshot(config.parent) == {"config": USER_TEXT.encode()}


def test_a_symlinked_config_is_edited_where_it_points(isolated_home: Path) -> None:
    real = isolated_home / "dotfiles" / "ssh_config"
    real.parent.mkdir()
    real.write_text(USER_TEXT)
    link = isolated_home / ".ssh" / "config"
    link.parent.mkdir()
    link.symlink_to(real)
    assert install(yes).changed
    assert link.is_symlink() and real.read_text().endswith(USER_TEXT)
    assert uninstall(yes).changed and real.read_text() == USER_TEXT


def test_read_only_ssh_folder_changes_nothing(isolated_home: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("a read-only mount needs root (a 0500 folder stops other users)")
    folder = isolated_home / ".ssh"
    folder.mkdir()
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mount.returncode != 0:
        dependency_missing(f"cannot mount a tmpfs here ({mount.stderr.strip()})")
    try:
        (folder / "config").write_text(USER_TEXT)
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        with pytest.raises(SshIncludeError, match="Read-only file system; nothing changed"):
            install(yes)
        assert _snapshot(folder) == {"config": USER_TEXT.encode()}
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)
