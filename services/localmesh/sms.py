"""Reading the development SMS outbox (JSON lines written by the gateway's FileSmsSender)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_outbox(path: Path) -> list[dict[str, Any]]:
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in lines if line.strip()]


def latest_code(path: Path, *, identification_id: str) -> str | None:
    """The last one-time code sent for an identification, or None."""
    for message in reversed(read_outbox(path)):
        if message.get("identification_id") == identification_id:
            return str(message["code"])
    return None
