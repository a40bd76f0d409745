"""jobtunnel's own key: generation, permissions, discovery, clipboard, passphrases."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest
from jobtunnel.daemon import paths
from jobtunnel.daemon.cli import main
from jobtunnel.daemon.engine import passphrase
from jobtunnel.daemon.engine.auth import KeyLoader, default_identity_files
from jobtunnel.daemon.files import permission_problem
from jobtunnel.daemon.setup import keys

from tests.helpers.keytools import memory_keyring, public_of, same_key

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def umask_wide() -> Iterator[None]:
    """A umask that would leave files world-readable: modes must not depend on it."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def mem_keyring(monkeypatch: pytest.MonkeyPatch) -> object:
    core = pytest.importorskip("keyring.core")
    # Saved and restored by monkeypatch; the real keyring is never looked up.
    monkeypatch.setattr(core, "_keyring_backend", None)
    backend = memory_keyring()
    core.set_keyring(backend)
    return backend


def test_generate_ed25519_private_in_private_folder(isolated_home: Path, umask_wide: None) -> None:
    path = keys.generate()
    assert path == paths.key_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert path.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    pub = Path(f"{path}.pub").read_text()
    assert same_key(public_of(path), pub)
    assert default_identity_files()[0] == path


def test_generate_never_overwrites(isolated_home: Path) -> None:
    path = keys.generate()
    before = path.read_bytes()
    with pytest.raises(keys.KeyFileError, match="exists"):
        keys.generate()
    assert main(["keys", "generate"]) == 1
    assert path.read_bytes() == before


def test_generate_rsa_is_found_by_the_engine(isolated_home: Path) -> None:
    path = keys.generate("rsa", 2048)
    assert path == paths.key_file().with_name("id_rsa")
    assert path in default_identity_files()
    assert public_of(path).startswith("ssh-rsa ")
    loaded = asyncio.run(KeyLoader().load("u", "h", 22, use_ssh_config=False))
    assert [k.get_algorithm() for k in loaded] == ["ssh-rsa"]
    with pytest.raises(keys.KeyFileError, match="2048"):
        keys.generate("rsa", 1024, path=isolated_home / "small")
    with pytest.raises(keys.KeyFileError, match="--bits"):
        keys.generate("ed25519", 256, path=isolated_home / "x")


def test_generate_with_passphrase(isolated_home: Path) -> None:
    path = keys.generate(passphrase="s3cret words")
    assert same_key(public_of(path, "s3cret words"), Path(f"{path}.pub").read_text())
    with pytest.raises(keys.KeyFileError, match="assphrase"):
        keys.read_private(path)


def test_loose_permissions_refused_on_use_with_the_fix(
    isolated_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = keys.generate()
    path.chmod(0o644)
    caplog.set_level(logging.WARNING, "jobtunnel.daemon.engine.auth")
    loaded = asyncio.run(KeyLoader().load("u", "h", 22, use_ssh_config=False))
    assert loaded == []
    assert f"chmod 600 {path}" in caplog.text
    assert permission_problem(path) is not None
    with pytest.raises(keys.KeyFileError, match=f"chmod 600 {path}"):
        keys.read_private(path)
    path.chmod(0o600)
    assert len(asyncio.run(KeyLoader().load("u", "h", 22, use_ssh_config=False))) == 1


def test_show_prints_line_and_fingerprint(
    isolated_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "show"]) == 1  # no key yet
    path = keys.generate()
    own = keys.public_key(path)
    assert own.fingerprint == asyncssh.read_private_key(path).get_fingerprint("sha256")
    capsys.readouterr()
    assert main(["keys", "show"]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == own.line and own.line.startswith("ssh-ed25519 ")
    assert own.fingerprint in err
    # Without its .pub the public half comes from the private key.
    Path(f"{path}.pub").unlink()
    assert keys.public_key(path).line == own.line


def test_clipboard_uses_the_tool_there_is(
    isolated_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    got = tmp_path / "clipboard"
    fake = bin_dir / "xclip"
    fake.write_text(f'#!/bin/sh\n/bin/cat > "{got}"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.delenv("DISPLAY", raising=False)
    assert keys.copy_to_clipboard("x") is None  # no display: no clipboard
    monkeypatch.setenv("DISPLAY", ":99")
    assert keys.copy_to_clipboard("ssh-ed25519 AAAA test") == "xclip"
    assert got.read_text() == "ssh-ed25519 AAAA test"
    fake.unlink()
    assert keys.copy_to_clipboard("x") is None  # display but no tool


def test_show_copy_says_when_there_is_no_clipboard(
    isolated_home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    keys.generate()
    monkeypatch.setattr(keys, "clipboard_tools", lambda: [])
    assert main(["keys", "show", "--copy"]) == 0
    assert "no clipboard here" in capsys.readouterr().err


def test_keyring_remember_recall_forget(isolated_home: Path, mem_keyring: object) -> None:
    path = keys.generate(passphrase="pw")
    assert passphrase.recall(path) is None
    passphrase.remember(path, "pw")
    assert passphrase.recall(path) == "pw"
    # The daemon's callback finds it and the engine unlocks the key with it.
    loader = KeyLoader(passphrase=passphrase.keyring_source)
    assert len(asyncio.run(loader.load("u", "h", 22, use_ssh_config=False))) == 1
    assert passphrase.forget(path) is True
    assert passphrase.forget(path) is False
    assert passphrase.recall(path) is None


def test_cli_remember_checks_the_passphrase(
    isolated_home: Path, mem_keyring: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = keys.generate(passphrase="right")
    monkeypatch.setattr(passphrase, "ask", lambda prompt: "wrong")
    assert main(["keys", "remember"]) == 1
    assert passphrase.recall(path) is None
    monkeypatch.setattr(passphrase, "ask", lambda prompt: "right")
    assert main(["keys", "remember"]) == 0
    assert passphrase.recall(path) == "right"
    assert main(["keys", "remember", "--forget"]) == 0
    assert passphrase.recall(path) is None


def test_without_keyring_package_a_clear_message(
    isolated_home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "keyring", None)  # import fails
    path = keys.generate(passphrase="pw")
    assert passphrase.recall(path) is None
    with pytest.raises(passphrase.KeyringUnavailable, match="pip install"):
        passphrase.remember(path, "pw")
    monkeypatch.setattr(passphrase, "ask", lambda prompt: "pw")
    assert main(["keys", "remember"]) == 1
    assert "keyring" in capsys.readouterr().err


def test_passphrase_never_logged(
    isolated_home: Path, mem_keyring: object, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    path = keys.generate(passphrase="do-not-log-me")
    passphrase.remember(path, "do-not-log-me")
    asyncio.run(KeyLoader(passphrase=passphrase.keyring_source).load("u", "h", 22, False))
    assert "do-not-log-me" not in caplog.text
