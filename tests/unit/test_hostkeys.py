"""Host key pins per (user, host, port): trust on first use, one pin per job."""

from __future__ import annotations

import subprocess
from pathlib import Path

import asyncssh
import pytest
from jobtunnel.daemon.engine.hostkeys import HostKeyStore, Verdict

pytestmark = pytest.mark.timeout(60)


def key() -> asyncssh.SSHKey:
    return asyncssh.generate_private_key("ssh-ed25519").convert_to_public()


def test_first_use_then_match_then_changed(tmp_path: Path) -> None:
    store = HostKeyStore(tmp_path / "state" / "known_hosts")
    k1, k2 = key(), key()
    assert store.check("uprod_1", "1.2.3.4", 22, k1) == (Verdict.NEW, None)
    store.pin("uprod_1", "1.2.3.4", 22, k1)
    verdict, pinned = store.check("uprod_1", "1.2.3.4", 22, k1)
    assert verdict is Verdict.MATCH and pinned is not None
    verdict, pinned = store.check("uprod_1", "1.2.3.4", 22, k2)
    assert verdict is Verdict.CHANGED
    assert pinned is not None and pinned.get_fingerprint() == k1.get_fingerprint()
    path = tmp_path / "state" / "known_hosts"
    assert path.stat().st_mode & 0o777 == 0o600


def test_pins_are_per_user_and_port(tmp_path: Path) -> None:
    store = HostKeyStore(tmp_path / "known_hosts")
    k1, k2, k3 = key(), key(), key()
    store.pin("uprod_1", "1.2.3.4", 22, k1)
    store.pin("uprod_2", "1.2.3.4", 22, k2)  # a new job reusing the address
    store.pin("uprod_1", "1.2.3.4", 32100, k3)
    assert store.check("uprod_2", "1.2.3.4", 22, k2)[0] is Verdict.MATCH
    assert store.check("uprod_1", "1.2.3.4", 22, k1)[0] is Verdict.MATCH
    assert store.check("uprod_1", "1.2.3.4", 32100, k3)[0] is Verdict.MATCH
    assert store.check("uprod_3", "1.2.3.4", 22, k1)[0] is Verdict.NEW
    lines = (tmp_path / "known_hosts").read_text().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("1.2.3.4 ssh-ed25519 ") and lines[0].endswith(
        "jobtunnel-user=uprod_1"
    )
    assert lines[2].startswith("[1.2.3.4]:32100 ssh-ed25519 ")
    # Re-pinning replaces, forgetting removes.
    store.pin("uprod_1", "1.2.3.4", 22, k2)
    assert store.check("uprod_1", "1.2.3.4", 22, k2)[0] is Verdict.MATCH
    assert len((tmp_path / "known_hosts").read_text().splitlines()) == 3
    assert store.forget("uprod_1", "1.2.3.4", 22)
    assert not store.forget("uprod_1", "1.2.3.4", 22)
    assert store.lookup("uprod_1", "1.2.3.4", 22) is None
    assert not list(tmp_path.glob(".known_hosts.*")), "temp file left behind"


def test_file_is_readable_by_openssh(tmp_path: Path) -> None:
    store = HostKeyStore(tmp_path / "known_hosts")
    k = key()
    store.pin("uprod_1", "10.0.0.5", 32100, k)
    store.pin("uprod_1", "10.0.0.6", 22, key())
    out = subprocess.run(
        ["ssh-keygen", "-F", "[10.0.0.5]:32100", "-f", str(tmp_path / "known_hosts")],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0 and "jobtunnel-user=uprod_1" in out.stdout


def test_foreign_and_broken_lines_are_kept_but_ignored(tmp_path: Path) -> None:
    path = tmp_path / "known_hosts"
    path.write_text("# hand written\nexample.org ssh-ed25519 AAAA\ngarbage\n")
    store = HostKeyStore(path)
    store.pin("u", "example.org", 22, key())
    text = path.read_text()
    assert "# hand written" in text and "garbage" in text
    with pytest.raises(ValueError):
        store.pin("bad user", "h", 22, key())
