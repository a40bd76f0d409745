"""Names for forwarded ports: well-known services, the config's own names (tables in
``tunnels.forwards``), and where they show (status, the tray)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from jobtunnel.daemon.api.schema import from_wire
from jobtunnel.daemon.cli.daemon import _forward_words
from jobtunnel.daemon.config import ConfigError, load_config, render_toml
from jobtunnel.daemon.core.portnames import port_name
from jobtunnel.daemon.engine.options import forwards_of
from jobtunnel.tray.menu import forward_text

from tests.helpers.recorded import recorded


def test_well_known_ports_and_given_names() -> None:
    assert [port_name(p) for p in (8888, 6006, 5901, 11111, 47827, 8787, 8080)] == [
        "Jupyter", "TensorBoard", "VNC", "ParaView", "STAR-CCM+", "RStudio", "code-server",
    ]  # fmt: skip
    assert port_name(12345) is None and port_name(None) is None
    assert port_name(8888, "My notebook") == "My notebook"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_forward_tables_and_plain_strings_together(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        '[tunnels]\nforwards = ["8888", {spec = "16006:localhost:6006", name = "TB run 3"},'
        ' {spec = "5901"}]\n',
    )
    config, _ = load_config(path)
    assert config.tunnels.forwards == ["8888", "16006:localhost:6006", "5901"]
    assert config.tunnels.forward_names == {"16006:localhost:6006": "TB run 3"}
    assert [f.spec for f in forwards_of(config)] == config.tunnels.forwards
    # `config show` writes the table back, and it reads the same.
    shown = render_toml(config)
    assert "{spec = '16006:localhost:6006', name = 'TB run 3'}" in shown
    assert load_config(_write(tmp_path, shown))[0] == config
    assert config.to_dict()["tunnels"]["forwards"][1] == {
        "spec": "16006:localhost:6006",
        "name": "TB run 3",
    }
    assert "forward_names" not in config.to_dict()["tunnels"]


def test_array_of_tables_form(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        '[tunnels]\nhold_seconds = 5\n\n[[tunnels.forwards]]\nspec = "6006"\nname = "TB"\n',
    )
    config, _ = load_config(path)
    assert config.tunnels.forwards == ["6006"] and config.tunnels.forward_names == {"6006": "TB"}


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ('[tunnels]\nforwards = [{name = "x"}]\n', 2, "entry 1: a table has spec"),
        ('[tunnels]\nforwards = ["8888", {spec = "a:b"}]\n', 2, "entry 2:"),
        ('[tunnels]\nforwards = [{spec = "6006", nmae = "x"}]\n', 2, "spec (a string) and name"),
        ('[tunnels]\nforwards = [{spec = "6006", name = 3}]\n', 2, "name must be a string"),
        ('[tunnels]\nforwards = [{spec = "6006", name = "a\\nb"}]\n', 2, "printable"),
        ('[tunnels]\nforwards = [{spec = "6006", name = "' + "x" * 41 + '"}]\n', 2, "at most 40"),
        ("[tunnels]\nforwards = [8888]\n", 2, "list of strings or tables"),
        ('\n[[tunnels.forwards]]\nspec = "no"\n', 2, "not a port number"),
    ],
)
def test_bad_tables_name_file_line_key(tmp_path: Path, text: str, line: int, words: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    [problem] = caught.value.problems
    assert (problem.line, problem.key) == (line, "tunnels.forwards")
    assert words in problem.message
    assert str(problem).startswith(f"{path}:{line}: tunnels.forwards: ")


def test_the_name_shows_in_the_tray_and_status() -> None:
    fwd = from_wire(recorded("up")).endpoints[0].forwards[0]
    named = dataclasses.replace(fwd, remote_port=8888, name="Jupyter", local_port=18888)
    assert forward_text(named) == "localhost:18888 -> 8888 Jupyter  up"
    assert _forward_words(named) == "localhost:18888 -> 8888 (Jupyter) up"
