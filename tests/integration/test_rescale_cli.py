"""``jobtunnel rescale ...`` against the fake Rescale API, with an in-memory keyring."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import keyring
import keyring.errors
import pytest
from jobtunnel.daemon.cli import main
from jobtunnel.daemon.config import RescaleConfig
from jobtunnel.daemon.engine import rescale_credentials as rc
from keyring.backend import KeyringBackend

from tests.helpers.rescale_api import KEY, FakeRescale


class MemoryKeyring(KeyringBackend):
    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.items: dict[tuple[str, str], str] = {}

    def set_password(self, service: str, username: str, password: str) -> None:
        self.items[(service, username)] = password

    def get_password(self, service: str, username: str) -> str | None:
        return self.items.get((service, username))

    def delete_password(self, service: str, username: str) -> None:
        if self.items.pop((service, username), None) is None:
            raise keyring.errors.PasswordDeleteError("none")


@pytest.fixture
def ring(isolated_home: Path) -> Iterator[MemoryKeyring]:
    before = keyring.get_keyring()
    memory = MemoryKeyring()
    keyring.set_keyring(memory)
    yield memory
    keyring.set_keyring(before)


@pytest.fixture
def fake() -> Iterator[FakeRescale]:
    with FakeRescale() as api:
        api.job("OsKBd", "Executing", "Started", name="the FOAM 2")
        api.job("XZFQV", "Completed", "Stopped", name="the FOAM")
        yield api


def cli(monkeypatch: pytest.MonkeyPatch, *argv: str, stdin: str = "") -> int:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    try:
        return main(list(argv))
    except SystemExit as exc:
        return int(exc.code or 0)


def test_login_checks_the_key_and_keeps_it_only_in_the_keyring(
    fake: FakeRescale,
    ring: MemoryKeyring,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("RESCALE_API_KEY", raising=False)
    assert cli(monkeypatch, "rescale", "login", "--url", fake.url, stdin="wrong\n") == 1
    assert "401" in capsys.readouterr().err and not ring.items
    assert cli(monkeypatch, "rescale", "login", "--url", fake.url, stdin=KEY + "\n") == 0
    printed = capsys.readouterr()
    assert "accepted the key" in printed.err and KEY not in printed.out + printed.err
    assert ring.items == {(rc.KEYRING_SERVICE, fake.url): KEY}
    assert KEY not in rc.login_file().read_text()
    assert fake.count("/api/v2/jobs/") == 2  # one request per check

    creds = rc.find(RescaleConfig())
    assert creds is not None and creds.base == fake.url and "keyring" in creds.origin
    assert KEY not in repr(creds) and KEY not in str(creds)

    assert cli(monkeypatch, "rescale", "jobs", "--json") == 0
    jobs = json.loads(capsys.readouterr().out)
    assert jobs == [
        {"id": "OsKBd", "name": "the FOAM 2", "status": "Executing", "cluster": "Started"}
    ]
    assert cli(monkeypatch, "rescale", "status", "--json") == 0
    status = json.loads(capsys.readouterr().out)
    assert status["base"] == fake.url and status["daemon"] is None

    assert cli(monkeypatch, "rescale", "logout") == 0
    assert not ring.items and not rc.login_file().exists()
    assert rc.find(RescaleConfig()) is None
    assert cli(monkeypatch, "rescale", "status") == 1


def test_login_from_the_rescale_cli_profile(
    fake: FakeRescale,
    ring: MemoryKeyring,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    apiconfig = rc.apiconfig_file()
    apiconfig.parent.mkdir(parents=True)
    apiconfig.write_text(
        f"[default]\napikey = other\napibaseurl = https://platform.rescale.com\n\n"
        f"[work]\napikey = {KEY}\napibaseurl = {fake.url}\n"
    )
    assert cli(monkeypatch, "rescale", "login", "--profile", "nope") == 1
    assert "no profile [nope] (profiles there: default, work)" in capsys.readouterr().err
    assert cli(monkeypatch, "rescale", "login", "--profile", "work") == 0
    assert ring.items == {(rc.KEYRING_SERVICE, fake.url): KEY}
    # [rescale] profile reads it at each start, without a copy.
    creds = rc.read_apiconfig("work")
    assert (creds.key, creds.base) == (KEY, fake.url)
    found = rc.find(RescaleConfig(profile="work"))
    assert found is not None and "apiconfig [work]" in found.origin


def test_key_sources_in_order(isolated_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rc, "_from_keyring", lambda: None)
    env = {"RESCALE_API_KEY": " abc "}
    creds = rc.find(RescaleConfig(platform="eu"), env)
    assert creds is not None and (creds.key, creds.base) == ("abc", "https://eu.rescale.com")
    assert rc.find(RescaleConfig(enabled=False), env) is None
    assert rc.find(RescaleConfig(), {}) is None
    with pytest.raises(rc.CredentialsError, match="apiconfig: no such file"):
        rc.find(RescaleConfig(profile="default"), env)


def test_doctor_says_where_the_key_comes_from_and_what_the_daemon_saw(
    isolated_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from types import SimpleNamespace

    from jobtunnel.daemon.api.schema import RescaleView
    from jobtunnel.daemon.config import Config
    from jobtunnel.daemon.setup.doctor import check_rescale

    monkeypatch.setattr(rc, "_from_keyring", lambda: None)
    monkeypatch.delenv("RESCALE_API_KEY", raising=False)
    check = check_rescale(Config(), None)
    assert (check.status, check.fix) == ("info", "jobtunnel rescale login")
    monkeypatch.setenv("RESCALE_API_KEY", KEY)
    assert "not checked" in check_rescale(Config(), None).detail
    stopped = RescaleView(state="stopped", error="/api/v2/jobs/: the Rescale API refused the key")
    status = SimpleNamespace(daemon=SimpleNamespace(rescale=stopped))
    check = check_rescale(Config(), status)  # type: ignore[arg-type]
    assert check.status == "fail" and "refused the key" in check.detail
    assert KEY not in str(check)
    ok = SimpleNamespace(daemon=SimpleNamespace(rescale=RescaleView(state="ok")))
    assert check_rescale(Config(), ok).status == "ok"  # type: ignore[arg-type]
