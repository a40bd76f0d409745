"""Status payloads the real daemon sent, recorded in ``tests/data/status/`` by
``tests/e2e/test_status_record.py``; the tray's, the CLI's and doctor's unit tests read
them, so a schema change breaks those tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["RECORDED", "recorded"]

RECORDED = Path(__file__).resolve().parents[1] / "data" / "status"


def recorded(name: str) -> dict[str, Any]:
    """A fresh copy of the payload ``name`` (``up``, ``paused``, ``pending-move``...)."""
    return json.loads((RECORDED / f"{name}.json").read_text())  # type: ignore[no-any-return]
