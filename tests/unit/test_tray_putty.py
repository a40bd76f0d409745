""" "Open in PuTTY": finding PuTTY, its command line (pure, from recorded daemon payloads),
the menu item, and the click (the .ppk written by the real `jobtunnel keys export`)."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from jobtunnel.daemon.api.schema import TrayAction, from_wire
from jobtunnel.daemon.setup import keys
from jobtunnel.tray import app as tray_app
from jobtunnel.tray.menu import Action, MenuContext, build_menu
from jobtunnel.tray.putty import find_putty, ppk_for, putty_command

from tests.helpers.deps import require_tool
from tests.helpers.recorded import recorded

CTX = MenuContext(
    now=1_700_000_000.0,
    identity_file="/home/me/.local/share/jobtunnel/id_ed25519",
    public_key="/home/me/.local/share/jobtunnel/id_ed25519.pub",
    log_file="/home/me/.local/state/jobtunnel/log/jobtunnel.log",
    config_file="/home/me/.config/jobtunnel/config.toml",
    putty="/usr/bin/putty",
)
PPK = CTX.identity_file + ".ppk"


def test_putty_command_with_the_forwards() -> None:
    ep = from_wire(recorded("paused")).endpoints[0]
    fwd = ep.forwards[0]
    assert putty_command("putty", ep, "k.ppk") == [
        "putty",
        "-ssh",
        "-P",
        str(ep.port),
        "-i",
        "k.ppk",
        "-L",
        f"127.0.0.1:{fwd.remote_port}:127.0.0.1:{fwd.remote_port}",
        f"{ep.user}@{ep.host}",
    ]
    assert "-L" not in putty_command("putty", ep, "k.ppk", with_forwards=False)


def test_putty_command_brackets_ipv6_and_takes_socks() -> None:
    ep = from_wire(recorded("up")).endpoints[0]
    fwd = ep.forwards[0]
    v6 = replace(
        ep,
        forwards=(
            replace(fwd, bind_address="::1", remote_host="::1"),
            replace(fwd, dynamic=True, local_port=1080),
        ),
    )
    argv = putty_command("putty", v6, "k.ppk")
    assert argv[argv.index("-L") + 1] == f"[::1]:{fwd.local_port}:[::1]:{fwd.remote_port}"
    assert argv[argv.index("-D") + 1] == "127.0.0.1:1080"


def _putty_item(snapshot_name: str, ctx: MenuContext) -> Action | None:
    for item in build_menu(from_wire(recorded(snapshot_name)), ctx):
        for child in item.children:
            if child.text == "Open in PuTTY":
                return child.action
    return None


def test_menu_offers_putty_only_where_it_is_installed() -> None:
    up = _putty_item("up", CTX)
    assert up is not None and up.id is TrayAction.OPEN_PUTTY
    ppk, identity, *argv = up.args
    assert (ppk, identity) == (PPK, CTX.identity_file)
    # The daemon holds the forwards while its tunnel runs: PuTTY gets the terminal only.
    assert argv[:6] == ["/usr/bin/putty", "-ssh", "-P", argv[3], "-i", PPK] and "-L" not in argv
    paused = _putty_item("paused", CTX)
    assert paused is not None and "-L" in paused.args
    assert _putty_item("up", MenuContext(**{**CTX.__dict__, "putty": None})) is None


def test_find_putty_per_platform() -> None:
    assert find_putty("linux", lambda name: "/usr/bin/putty") == "/usr/bin/putty"
    assert find_putty("darwin", lambda name: None) is None
    env = {"ProgramFiles": "C:\\Program Files", "ProgramFiles(x86)": "C:\\Program Files (x86)"}
    installed = {"C:\\Program Files (x86)\\PuTTY\\putty.exe"}
    found = find_putty("win32", lambda name: None, env, installed.__contains__)
    assert found == "C:\\Program Files (x86)\\PuTTY\\putty.exe"
    assert find_putty("win32", lambda name: None, env, lambda p: False) is None
    assert find_putty("win32", lambda name: "C:\\bin\\putty.exe", env) == "C:\\bin\\putty.exe"


def test_click_writes_the_ppk_then_starts_putty(
    isolated_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    puttygen = require_tool("puttygen", "putty-tools")
    own = keys.generate("ed25519")
    app = tray_app.TrayApp()
    started: list[list[str]] = []
    told: list[tuple[str, str]] = []
    monkeypatch.setattr(tray_app.desktop, "start_program", started.append)
    monkeypatch.setattr(app, "tell", lambda title, message: told.append((title, message)))
    ppk = ppk_for(str(own))
    argv = ["/usr/bin/putty", "-ssh", "-P", "22", "-i", ppk, "u@h"]
    app._open_putty(ppk, str(own), argv)  # what the click's thread runs
    assert started == [argv] and not told
    public = subprocess.run(
        [puttygen, ppk, "-O", "public-openssh"], check=True, capture_output=True, text=True
    ).stdout.strip()
    assert public == Path(f"{own}.pub").read_text().strip()
    # An encrypted key cannot be exported without a terminal: said, PuTTY not started.
    enc = keys.generate("rsa", bits=2048, passphrase="pw")
    app._open_putty(ppk_for(str(enc)), str(enc), argv)
    assert len(started) == 1 and told and "keys export --ppk" in told[0][1]
