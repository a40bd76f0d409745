"""The config file: defaults, the file `config init` writes, and errors that name the line."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jobtunnel.daemon import paths
from jobtunnel.daemon.config import (
    Config,
    ConfigError,
    ReconnectConfig,
    SshConfig,
    TunnelsConfig,
    default_config_text,
    load_config,
    render_toml,
)
from jobtunnel.daemon.engine.options import tunnel_options


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_missing_default_file_means_every_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv("JOBTUNNEL_CONFIG", raising=False)
    config, path = load_config()
    assert config == Config()
    assert path == tmp_path / "jobtunnel" / "config.toml"


def test_the_issue_names_and_defaults() -> None:
    config = Config()
    assert config.detect.allow_private_addresses is False
    assert config.watch.folders == ["~/JobLogs"]
    assert config.watch.patterns == ["*.log", "*.txt", "*.tsv", "*.csv", "*.out", "*.html"]
    assert config.ssh.identity_files == []
    assert (config.ssh.keepalive_interval, config.ssh.keepalive_count_max) == (5, 2)
    assert config.tunnels.forwards == ["8888"]
    assert config.tunnels.bind_address == "127.0.0.1"
    assert config.tunnels.hold_seconds == 30


def test_init_text_is_commented_and_documents_every_key(tmp_path: Path) -> None:
    text = default_config_text()
    # Everything commented: the file parses to empty tables, i.e. all defaults.
    assert load_config(write(tmp_path, text))[0] == Config()
    uncommented = "\n".join(
        line[2:] if line.startswith("# ") and " = " in line else line for line in text.splitlines()
    )
    assert tomllib.loads(uncommented) == Config().to_dict()
    for section, values in Config().to_dict().items():
        assert f"[{section}]" in text
        for key in values:
            assert f"# {key} = " in text


def test_show_round_trips(tmp_path: Path) -> None:
    config = load_config(
        write(tmp_path, '[tunnels]\nforwards = ["8888", "127.0.0.1:6006:localhost:6006"]\n')
    )[0]
    assert load_config(write(tmp_path, render_toml(config)))[0] == config


def test_values_are_applied(tmp_path: Path) -> None:
    config, _ = load_config(
        write(
            tmp_path,
            "[detect]\nallow_private_addresses = true\n"
            "[ssh]\nkeepalive_interval = 1.5\nidentity_files = ['~/.ssh/rescale']\n"
            "[tunnels]\nforwards = ['47827', '11111']\nhold_seconds = 0\n",
        )
    )
    assert config.detect.allow_private_addresses is True
    assert config.ssh.keepalive_interval == 1.5
    assert config.ssh.identity_files == ["~/.ssh/rescale"]
    assert config.tunnels.forwards == ["47827", "11111"]
    assert config.tunnels.hold_seconds == 0


@pytest.mark.parametrize(
    ("text", "line", "key", "words"),
    [
        (
            "[detect]\n\nallow_private_addresses = 'yes'\n",
            3,
            "detect.allow_private_addresses",
            "true or false",
        ),
        ("[ssh]\nkeepalive_interval = true\n", 2, "ssh.keepalive_interval", "number"),
        ("[ssh]\nkeepalive_count_max = 0\n", 2, "ssh.keepalive_count_max", "from 1 to 1000"),
        ("[tunnels]\nforwards = ['8888', 'a:b']\n", 2, "tunnels.forwards", "a:b"),
        ("[tunnels]\nforwards = '8888'\n", 2, "tunnels.forwards", "a list"),
        ("[tunnels]\nforwards = [8888]\n", 2, "tunnels.forwards", "list of strings"),
        ("[tunnels]\nbind_address = ''\n", 2, "tunnels.bind_address", "IP address"),
        ("[tunnels]\nport_range = [9, 2]\n", 2, "tunnels.port_range", "low <= high"),
        ("[tunnels]\nhold_secs = 3\n", 2, "tunnels.hold_secs", "hold_seconds"),
        ("[detect]\nusername_pattern = 'u(x'\n", 2, "detect.username_pattern", "regular"),
        ("[detect]\nusername_pattern = '(u)prod'\n", 2, "detect.username_pattern", "groups"),
        ("[daemon]\nevent_loop = 'trio'\n", 2, "daemon.event_loop", "uvloop"),
        ("[nonsense]\nx = 1\n", 1, "nonsense", "[tunnels]"),
        ("x = 1\n", 1, "x", "unknown section"),
        ("[watch]\nfolders = ['']\n", 2, "watch.folders", "non-empty"),
        ("[ssh]\nproxy_jump = 'bastion.example'\n", 2, "ssh.proxy_jump", "user@host"),
        ("[ssh]\nproxy_jump = 'me@bastion:0'\n", 2, "ssh.proxy_jump", "1 to 65535"),
    ],
)
def test_errors_name_file_line_key_and_what_is_allowed(
    tmp_path: Path, text: str, line: int, key: str, words: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    [problem] = caught.value.problems
    assert (problem.file, problem.line, problem.key) == (path, line, key)
    assert words in problem.message
    assert str(problem).startswith(f"{path}:{line}: {key}: ")


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, "[ssh]\nkeepalive_interval = -1\n[tunnels]\nhold_seconds = 'x'\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert [p.line for p in caught.value.problems] == [2, 4]


@pytest.mark.parametrize(
    ("raw", "line", "words"),
    [
        (b"[ssh]\nkeepalive_interval = \n", 2, "not valid TOML"),
        (b"[ssh\n", 1, "not valid TOML"),
        (b"[ssh]\n# caf\xe9\n", 2, "not UTF-8"),
    ],
)
def test_unreadable_files_name_the_line(tmp_path: Path, raw: bytes, line: int, words: str) -> None:
    path = tmp_path / "c.toml"
    path.write_bytes(raw)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    [problem] = caught.value.problems
    assert problem.line == line
    assert words in problem.message


def test_an_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "absent.toml")


def test_xdg_variables_and_home_move_every_location(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_DATA_HOME", "XDG_RUNTIME_DIR"):
        monkeypatch.setenv(var, str(tmp_path / var))
    monkeypatch.delenv("JOBTUNNEL_CONFIG", raising=False)
    assert paths.config_file() == tmp_path / "XDG_CONFIG_HOME" / "jobtunnel" / "config.toml"
    assert paths.state_dir() == tmp_path / "XDG_STATE_HOME" / "jobtunnel"
    assert paths.key_file().is_relative_to(tmp_path / "XDG_DATA_HOME")
    assert paths.known_hosts_file().is_relative_to(tmp_path / "XDG_STATE_HOME")
    assert paths.runtime_dir().is_relative_to(tmp_path / "XDG_RUNTIME_DIR")
    monkeypatch.setenv("JOBTUNNEL_CONFIG", str(tmp_path / "elsewhere.toml"))
    assert paths.config_file() == tmp_path / "elsewhere.toml"
    for var in ("XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_DATA_HOME", "XDG_RUNTIME_DIR"):
        monkeypatch.delenv(var)
    monkeypatch.delenv("JOBTUNNEL_CONFIG")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert paths.config_file().is_relative_to(tmp_path / "home")
    assert paths.state_dir().is_relative_to(tmp_path / "home")
    assert paths.runtime_dir().is_relative_to(tmp_path / "home")


@pytest.mark.parametrize(
    ("body", "key", "line"),
    [
        ("[reconnect]\ninitial_delay = 0\n", "reconnect.initial_delay", 2),
        ("[reconnect]\ninitial_delay = 5\nmax_delay = 1\n", "reconnect.max_delay", 3),
        ("[reconnect]\n\ngive_up_after = 0\n", "reconnect.give_up_after", 3),
        ('[ssh]\nciphers = ["rot13"]\n', "ssh.ciphers", 2),
    ],
)
def test_what_the_engine_would_refuse_fails_the_check(
    tmp_path: Path, body: str, key: str, line: int
) -> None:
    path = write(tmp_path, body)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert f"{path}:{line}: {key}: " in str(caught.value)


def _around(low: float, high: float, whole: bool) -> st.SearchStrategy[float]:
    """Values at, just inside and just outside a key's bounds, plus some in between."""
    edges = [low, high, low + 1, high - 1, low - 1, high + 1]
    if not whole:
        edges += [low + 0.001, low - 0.001, 0.0, 1e-9]
    picks = st.sampled_from(edges)
    inner = st.integers(int(low), int(min(high, 10**6))) if whole else st.floats(low, high)
    return st.one_of(picks, inner)


def _numeric_keys() -> list[tuple[str, str, float, float, bool]]:
    """(section, key, low, high, whole) for every number the engine takes."""
    out = []
    for section, cls in (
        ("ssh", SshConfig),
        ("tunnels", TunnelsConfig),
        ("reconnect", ReconnectConfig),
    ):
        for f in dataclasses.fields(cls):
            kind = f.metadata["kind"]
            if kind is int:
                out.append((section, f.name, 0.0, 1001.0, True))
            elif kind == (int, float):
                out.append((section, f.name, 0.0, 1e9, False))
    return out


@given(data=st.data())
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_every_config_accepted_builds_the_engine_settings(
    tmp_path: Path, data: st.DataObject
) -> None:
    sections: dict[str, list[str]] = {}
    for section, key, low, high, whole in _numeric_keys():
        if data.draw(st.booleans()):
            value = data.draw(_around(low, high, whole))
            sections.setdefault(section, []).append(f"{key} = {value!r}")
    if data.draw(st.booleans()):
        low = data.draw(st.sampled_from([0, 1, 2, 65535, 65536]))
        high = data.draw(st.sampled_from([0, 1, 1024, 65535, 65536]))
        sections.setdefault("tunnels", []).append(f"port_range = [{low}, {high}]")
    text = "".join(f"[{s}]\n" + "\n".join(lines) + "\n" for s, lines in sections.items())
    path = write(tmp_path, text)
    try:
        config, _ = load_config(path)
    except ConfigError:
        return
    options = tunnel_options(config)  # raises ValueError if the engine refuses it
    options.policy()
