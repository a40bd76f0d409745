"""The shared sample job logs (``shared/job-logs`` beside the repository) and their truth."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[1]


def samples_dir() -> Path:
    """The samples folder; a missing one fails the run (CI has it beside the clone)."""
    for candidate in (_ROOT.parent / "shared" / "job-logs", _ROOT / "shared" / "job-logs"):
        if (candidate / "expected.json").exists():
            return candidate
    pytest.fail(f"the shared job-log samples are missing (looked beside {_ROOT})")


def expected_cases() -> list[tuple[str, list[dict[str, object]]]]:
    """(file name, endpoints scan --json must print for it), from expected.json."""
    expected = json.loads((samples_dir() / "expected.json").read_text())
    return [(name, want) for name, want in expected.items() if not name.startswith("_")]
