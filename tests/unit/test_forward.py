"""Forward specs in OpenSSH -L / -D syntax."""

from __future__ import annotations

import pytest
from jobtunnel.daemon.core.forward import ForwardSpec, parse_dynamic, parse_forward


@pytest.mark.parametrize(
    ("spec", "want"),
    [
        ("8888", ForwardSpec("8888", 8888, "localhost", 8888)),
        ("6006:localhost:6006", ForwardSpec("6006:localhost:6006", 6006, "localhost", 6006)),
        (
            "127.0.0.2:8080:db:5432",
            ForwardSpec("127.0.0.2:8080:db:5432", 8080, "db", 5432, "127.0.0.2"),
        ),
        (
            "[::1]:8080:[fe80::1]:80",
            ForwardSpec("[::1]:8080:[fe80::1]:80", 8080, "fe80::1", 80, "::1"),
        ),
        ("0:node1:11111", ForwardSpec("0:node1:11111", 0, "node1", 11111)),
        ("8080/web/80", ForwardSpec("8080/web/80", 8080, "web", 80)),
    ],
)
def test_parse_forward(spec: str, want: ForwardSpec) -> None:
    assert parse_forward(spec) == want


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("", "empty"),
        ("http", "not a port"),
        ("99999", "outside"),
        ("1:2", "cannot read"),
        ("1:h:0", "remote port 0"),
        ("a:b:c:d:e", "cannot read"),
        ("[::1:80:h:80", "unbalanced"),
        ("80: :80", "spaces"),
    ],
)
def test_parse_forward_errors_say_what_is_wrong(spec: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse_forward(spec)


def test_parse_dynamic() -> None:
    assert parse_dynamic("1080") == ForwardSpec("1080", 1080, dynamic=True)
    assert parse_dynamic("[::1]:1080") == ForwardSpec(
        "[::1]:1080", 1080, bind_address="::1", dynamic=True
    )
    with pytest.raises(ValueError, match="dynamic"):
        parse_dynamic("1:h:2")
