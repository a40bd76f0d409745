"""PuTTY key import: keys made by Debian's puttygen at test time, converted, and checked
with ssh-keygen against the public key puttygen reports."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from jobtunnel.daemon.setup import keys, ppk

from tests.helpers.deps import require_tool
from tests.helpers.keytools import public_of, same_key

pytestmark = pytest.mark.timeout(120)

# Cheap Argon2 for most cases; one case keeps puttygen's defaults (8 MiB, ~100 ms).
FAST = "memory=1024,passes=1"


def puttygen_key(
    tmp_path: Path, kind: str, version: int, passphrase: str = "", kdf: str = "", fast: bool = True
) -> tuple[Path, str]:
    """A new .ppk made by puttygen, and the OpenSSH public key line puttygen reports."""
    puttygen = require_tool("puttygen", "putty-tools")
    name = f"{kind.replace(' ', '')}-v{version}-{kdf or 'id'}-{'enc' if passphrase else 'plain'}"
    out = tmp_path / f"{name}.ppk"
    phrase_file = tmp_path / f"{name}.pass"
    phrase_file.write_text(passphrase)
    params = [f"version={version}"]
    if version == 3 and passphrase:
        params += [f"kdf={kdf}"] if kdf else []
        params += [FAST] if fast else []
    args = [puttygen, "-t", *kind.split(), "-C", f"comment {name}", "-o", str(out)]
    args += ["--new-passphrase", str(phrase_file), "--ppk-param", ",".join(params)]
    subprocess.run(args, check=True, capture_output=True, timeout=60)
    public = subprocess.run(
        [puttygen, str(out), "--old-passphrase", str(phrase_file), "-O", "public-openssh"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    return out, public


CASES = [
    # (puttygen -t ..., version, passphrase, kdf)
    ("ed25519", 3, "", ""),
    ("ed25519", 3, "pässword", "argon2id"),
    ("ed25519", 2, "", ""),
    ("ed25519", 2, "s3cret", ""),
    ("rsa -b 2048", 3, "s3cret", "argon2i"),
    ("rsa -b 2048", 2, "", ""),
    ("ecdsa -b 256", 3, "s3cret", "argon2d"),
    ("ecdsa -b 384", 2, "s3cret", ""),
    ("ecdsa -b 521", 3, "", ""),
]


@pytest.mark.parametrize(("kind", "version", "phrase", "kdf"), CASES)
def test_converted_key_matches_puttygen_public_key(
    tmp_path: Path, kind: str, version: int, phrase: str, kdf: str
) -> None:
    source, public = puttygen_key(tmp_path, kind, version, phrase, kdf)
    data = source.read_bytes()
    assert ppk.needs_passphrase(data) == bool(phrase)
    out = tmp_path / "converted"
    out.write_bytes(ppk.to_openssh(data, phrase or None, new_passphrase=phrase or None))
    out.chmod(0o600)
    assert same_key(public_of(out, phrase), public)
    assert ppk.convert(data, phrase or None).get_comment() == public.split(" ", 2)[2]


def test_default_argon2_parameters(tmp_path: Path) -> None:
    source, public = puttygen_key(tmp_path, "ed25519", 3, "pw", fast=False)
    assert "Argon2-Memory: 8192" in source.read_text()
    key = ppk.convert(source.read_bytes(), "pw")
    assert same_key(key.export_public_key().decode(), public)


def test_import_writes_own_key_keeping_the_passphrase(isolated_home: Path, tmp_path: Path) -> None:
    source, public = puttygen_key(tmp_path, "rsa -b 2048", 3, "pw", "argon2id")
    written = keys.import_ppk(source, "pw")
    assert written == keys.own_key_path("rsa")
    assert written.stat().st_mode & 0o777 == 0o600
    assert same_key(public_of(written, "pw"), public)
    assert same_key(Path(f"{written}.pub").read_text(), public)
    # Never overwrites: a second import of anything to the same place is refused.
    before = written.read_bytes()
    with pytest.raises(keys.KeyFileError, match="exists"):
        keys.import_ppk(source, "pw")
    assert written.read_bytes() == before


def test_wrong_or_missing_passphrase_names_the_file(isolated_home: Path, tmp_path: Path) -> None:
    for version in (2, 3):
        source, _ = puttygen_key(tmp_path, "ed25519", version, "right")
        with pytest.raises(ppk.PpkPassphraseError, match="wrong passphrase"):
            ppk.convert(source.read_bytes(), "wrong")
        with pytest.raises(ppk.PpkPassphraseError, match="passphrase is needed"):
            ppk.convert(source.read_bytes(), None)
        with pytest.raises(keys.KeyFileError, match=f"{source.name}.*wrong passphrase"):
            keys.import_ppk(source, "wrong")
    assert keys.own_keys() == []


def _replace_line(text: str, prefix: str, change: str) -> str:
    lines = text.splitlines(keepends=True)
    i = next(n for n, line in enumerate(lines) if line.startswith(prefix))
    lines[i] = change
    return "".join(lines)


def test_damaged_files_give_clear_errors(isolated_home: Path, tmp_path: Path) -> None:
    source, _ = puttygen_key(tmp_path, "ed25519", 3, "")
    text = source.read_text()
    priv_line = text.splitlines()[text.splitlines().index("Private-Lines: 1") + 1]
    flipped = ("B" if priv_line[5] != "B" else "C").join([priv_line[:5], priv_line[6:]])
    damaged = {
        "comment edited": (_replace_line(text, "Comment:", "Comment: edited\n"), "MAC mismatch"),
        "private bytes": (text.replace(priv_line, flipped), "MAC mismatch|damaged"),
        "truncated": (text[: text.index("Private-Lines")], "missing"),
        "bad base64": (text.replace(priv_line, "!!!!"), "damaged base64"),
        "not a key": ("hello\n", "not a PuTTY key file"),
        "version 1": ("PuTTY-User-Key-File-1: ssh-rsa\n", "version 1"),
        "unknown kdf": (
            _replace_line(text, "Encryption:", "Encryption: aes256-cbc\n")
            + "Key-Derivation: scrypt\n",
            "Key-Derivation",
        ),
    }
    for what, (body, message) in damaged.items():
        bad = tmp_path / f"{what.replace(' ', '_')}.ppk"
        bad.write_text(body)
        with pytest.raises(keys.KeyFileError) as caught:
            keys.import_ppk(bad, "pw")
        assert bad.name in str(caught.value), what
        assert re.search(message, str(caught.value)), (what, caught.value)
    assert keys.own_keys() == []


def test_hostile_argon2_cost_is_refused(tmp_path: Path) -> None:
    source, _ = puttygen_key(tmp_path, "ed25519", 3, "pw", "argon2id")
    text = _replace_line(source.read_text(), "Argon2-Memory:", "Argon2-Memory: 999999999\n")
    with pytest.raises(ppk.PpkError, match="Argon2 cost out of range"):
        ppk.convert(text.encode(), "pw")


def test_crlf_line_endings(tmp_path: Path) -> None:
    source, public = puttygen_key(tmp_path, "ecdsa -b 256", 2, "pw")
    windows = source.read_text().replace("\n", "\r\n").encode()
    assert same_key(ppk.convert(windows, "pw").export_public_key().decode(), public)


def test_cli_import_asks_the_passphrase(
    isolated_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jobtunnel.daemon.cli import main
    from jobtunnel.daemon.engine import passphrase

    source, public = puttygen_key(tmp_path, "ed25519", 3, "pw", "argon2id")
    monkeypatch.setattr(passphrase, "ask", lambda prompt: None)  # no terminal
    assert main(["keys", "import", str(source)]) == 2
    monkeypatch.setattr(passphrase, "ask", lambda prompt: "nope")
    assert main(["keys", "import", str(source)]) == 1
    monkeypatch.setattr(passphrase, "ask", lambda prompt: "pw")
    assert main(["keys", "import", str(source)]) == 0
    assert same_key(public_of(keys.own_key_path("ed25519"), "pw"), public)


def test_missing_puttygen_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tests.helpers.deps.shutil.which", lambda name: None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        require_tool("puttygen", "putty-tools")
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception):
        require_tool("puttygen", "putty-tools")


# -- export: jobtunnel's key for PuTTY, read back by the real puttygen ---------------------

EXPORT_KINDS = [
    ("ssh-ed25519", {}),
    ("ssh-rsa", {"key_size": 2048}),
    ("ecdsa-sha2-nistp256", {}),
    ("ecdsa-sha2-nistp384", {}),
    ("ecdsa-sha2-nistp521", {}),
]


@pytest.mark.parametrize(("algorithm", "options"), EXPORT_KINDS)
@pytest.mark.parametrize("phrase", ["", "s3cret pässword"])
def test_exported_ppk_is_read_by_puttygen(
    tmp_path: Path, algorithm: str, options: dict[str, int], phrase: str
) -> None:
    import asyncssh

    puttygen = require_tool("puttygen", "putty-tools")
    key = asyncssh.generate_private_key(algorithm, comment="jobtunnel me@laptop", **options)
    expected = key.export_public_key("openssh").decode().strip()
    out = tmp_path / "key.ppk"
    out.write_bytes(ppk.to_ppk(key, phrase or None))
    assert out.read_text().startswith(f"PuTTY-User-Key-File-3: {algorithm}\n")
    phrase_file = tmp_path / "pass"
    phrase_file.write_text(phrase)
    old = ["--old-passphrase", str(phrase_file)]
    public = subprocess.run(
        [puttygen, str(out), *old, "-O", "public-openssh"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    assert public == expected  # comment included
    # The private half too: puttygen converts it back to OpenSSH, ssh-keygen derives the
    # public key from it.
    back = tmp_path / "back"
    subprocess.run(
        [puttygen, str(out), *old, "-O", "private-openssh", "-o", str(back)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    assert same_key(public_of(back, phrase), expected)
    # And our own reader takes it back.
    assert ppk.convert(out.read_bytes(), phrase or None).public_data == key.public_data


def test_wrong_passphrase_on_an_exported_key(tmp_path: Path) -> None:
    import asyncssh

    data = ppk.to_ppk(asyncssh.generate_private_key("ssh-ed25519"), "right")
    with pytest.raises(ppk.PpkPassphraseError):
        ppk.convert(data, "wrong")


def test_cli_export_writes_the_own_key_for_putty(
    isolated_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jobtunnel.daemon.cli import main
    from jobtunnel.daemon.engine import passphrase

    puttygen = require_tool("puttygen", "putty-tools")
    assert main(["keys", "generate"]) == 0
    own = keys.own_key_path("ed25519")
    out = tmp_path / "jobtunnel.ppk"
    assert main(["keys", "export", "--ppk", str(out)]) == 0
    assert out.stat().st_mode & 0o777 == 0o600
    public = subprocess.run(
        [puttygen, str(out), "-O", "public-openssh"], check=True, capture_output=True, text=True
    ).stdout.strip()
    assert public == Path(f"{own}.pub").read_text().strip()
    # Never over an existing file.
    assert main(["keys", "export", "--ppk", str(out)]) == 1
    # An encrypted key keeps its passphrase in the .ppk.
    enc = tmp_path / "enc"
    keys.generate("ed25519", passphrase="pw", path=enc)
    monkeypatch.setattr(passphrase, "ask", lambda prompt: "pw")
    out2 = tmp_path / "enc.ppk"
    assert main(["keys", "export", "--ppk", str(out2), "--file", str(enc)]) == 0
    assert ppk.needs_passphrase(out2.read_bytes())
    assert (
        ppk.convert(out2.read_bytes(), "pw").public_data == keys.read_private(enc, "pw").public_data
    )
