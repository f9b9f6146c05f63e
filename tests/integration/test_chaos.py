"""The short form of `make chaos`: two rounds of the seeded fault run over the real mesh, with
at least one failpoint armed per round, and the checker over the history finding nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tools.chaos.run import Options, run

pytestmark = pytest.mark.mesh

SEED = 20261129


@pytest.mark.timeout(400)
async def test_two_chaos_rounds_keep_every_invariant(tmp_path: Path) -> None:
    options = Options(seed=SEED, rounds=2, out=tmp_path, window=10.0, load_seconds=6.0)
    assert await run(options) == 0, f"a violation: see {tmp_path}/history.jsonl"
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["violations"] == []
    assert sum(summary["failpoints_armed"].values()) >= 2  # at least one per round
    assert summary["races"] >= 2
    checked = summary["checked"]
    assert checked["terminations_acked"] > 0
    assert checked["notices"] > 0
    assert checked["identified_users"] > 0
    history = (tmp_path / "history.jsonl").read_text().splitlines()
    assert len(history) == summary["requests"] + sum(
        1 for line in history if json.loads(line)["kind"] != "op"
    )
