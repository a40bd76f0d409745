"""``status`` and ``trust`` as the CLI renders the recorded daemon replies: the CLI reads
them through the schema, so a payload that no longer fits is a clear error."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from jobtunnel.daemon.api import client
from jobtunnel.daemon.cli import main

from tests.helpers.recorded import recorded


def answering(monkeypatch: pytest.MonkeyPatch, status: dict[str, Any]) -> list[tuple[str, Any]]:
    """The daemon replies ``status`` to "status"; every call is kept."""
    calls: list[tuple[str, Any]] = []

    def call_sync(cmd: str, params: Any = None, **kw: Any) -> Any:
        calls.append((cmd, params))
        return status if cmd == "status" else "ok"

    monkeypatch.setattr(client, "call_sync", call_sync)
    return calls


def test_status_shows_a_pending_move_and_the_command_that_applies_it(
    isolated_home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    answering(monkeypatch, recorded("pending-move"))
    assert main(["status"]) == 0
    shown = capsys.readouterr().out
    assert "uprod_rec1@127.0.0.1:" in shown and "failed" in shown
    assert (
        "rec1 reports a new address 127.0.0.2:32100 (from /home/u/JobLogs/newer.log:1): "
        "`jobtunnel switch rec1` moves it"
    ) in shown


def test_status_names_a_refused_key(
    isolated_home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    status = recorded("refused-key")
    answering(monkeypatch, status)
    assert main(["status"]) == 0
    fingerprint = status["endpoints"][0]["refused_key"]
    assert f"offered the host key {fingerprint}, which was refused" in capsys.readouterr().out


def test_status_says_why_and_when_a_link_was_checked(
    isolated_home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    status = recorded("up")
    ep = status["endpoints"][0]
    ep["checked"] = {
        "reason": "woke from sleep",
        "at": time.time() - 5,
        "outcome": "no answer within 1.5 s; reconnecting",
    }
    answering(monkeypatch, status)
    assert main(["status"]) == 0
    who = ep["job_id"] or ep["name"]
    line = f"{who}: checked 5s ago (woke from sleep): no answer within 1.5 s; reconnecting"
    assert line in capsys.readouterr().out


def test_status_gives_the_https_address_of_a_forward_that_speaks_tls(
    isolated_home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    status = recorded("up")
    forwards = status["endpoints"][0]["forwards"]
    forwards[0]["tls"] = True
    answering(monkeypatch, status)
    assert main(["status"]) == 0
    shown = capsys.readouterr().out
    assert f"https://localhost:{forwards[0]['local_port']} -> " in shown, shown
    if len(forwards) > 1:
        assert f" localhost:{forwards[1]['local_port']} -> " in shown, shown


def test_status_json_passes_the_reply_through(
    isolated_home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    status = recorded("up")
    answering(monkeypatch, status)
    assert main(["status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == status


def test_a_reply_that_does_not_fit_names_the_key(
    isolated_home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    status = recorded("up")
    status["endpoints"][0]["forwards"][0]["local_port"] = "8888"
    answering(monkeypatch, status)
    assert main(["status"]) == 1
    assert (
        "endpoints[0].forwards[0].local_port: expected int or null, got string"
        in capsys.readouterr().err
    )


def test_a_newer_schema_says_to_upgrade(
    isolated_home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    answering(monkeypatch, recorded("up") | {"version": 99})
    assert main(["status"]) == 1
    assert "upgrade jobtunnel" in capsys.readouterr().err


def test_trust_without_a_terminal_names_the_refused_key_and_pins_nothing(
    isolated_home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    status = recorded("refused-key")
    calls = answering(monkeypatch, status)
    [ep] = status["endpoints"]
    monkeypatch.setattr("sys.stdin", None)
    assert main(["trust", ep["name"]]) == 2  # like a missing argument: say which
    said = capsys.readouterr().err
    assert f"`jobtunnel trust {ep['name']} {ep['refused_key']}` pins that key" in said
    assert [cmd for cmd, _ in calls] == ["status"]


def test_trust_yes_pins_the_key_that_was_shown(
    isolated_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    status = recorded("refused-key")
    calls = answering(monkeypatch, status)
    [ep] = status["endpoints"]
    assert main(["trust", ep["name"], "--yes"]) == 0
    assert calls[-1] == ("trust", {"name": ep["name"], "fingerprint": ep["refused_key"]})


def test_trust_of_an_endpoint_with_no_refused_key_says_so(
    isolated_home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    status = recorded("up")
    answering(monkeypatch, status)
    assert main(["trust", status["endpoints"][0]["name"], "--yes"]) == 1
    assert "has no refused host key to trust (state up)" in capsys.readouterr().err
