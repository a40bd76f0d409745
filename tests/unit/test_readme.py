"""The README's configuration table names every key the config schema has, with its
default as the schema gives it, so a key added or changed in the code shows in the docs."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

from jobtunnel.daemon.config import Config

README = Path(__file__).resolve().parents[2] / "README.md"
ROW = re.compile(r"^\| `(?P<key>[a-z_]+\.[a-z_]+)` \| (?P<default>.+?) \| .+ \|$", re.M)


def table() -> dict[str, str]:
    return {m["key"]: m["default"] for m in ROW.finditer(README.read_text(encoding="utf-8"))}


def same(shown: str, default: object) -> bool:
    try:
        return bool(json.loads(shown) == default)
    except ValueError:
        return shown == str(default)  # a pattern, written as it is


def test_every_config_key_is_in_the_readme_table_with_its_default() -> None:
    documented = table()
    config = Config()
    missing, wrong = [], []
    for section in dataclasses.fields(Config):
        values = getattr(config, section.name)
        for f in dataclasses.fields(values):
            if f.metadata.get("internal"):
                continue  # derived from other keys (tunnels.forward_names), not a key
            key = f"{section.name}.{f.name}"
            if key not in documented:
                missing.append(key)
                continue
            default = getattr(values, f.name)
            shown = documented[key]
            if isinstance(default, list) and len(default) > 3:
                continue  # a long list is shown by its first items ("a, b, ...")
            if not same(shown.strip("`"), default):
                wrong.append(f"{key}: README {shown}, schema {json.dumps(default)}")
    assert not missing, f"not in the README's config table: {missing}"
    assert not wrong, "\n".join(wrong)
