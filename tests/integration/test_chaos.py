"""The short forms of `make chaos`: two rounds of the seeded fault run over the real mesh, with
at least one failpoint armed per round, and the checker over the history finding nothing; and
two rounds on PostgreSQL with two replicas of every service, a failover and a crash-restart of
the database among the faults; and two rounds of that mesh with every replica and the database
on a host of its own, partitions between hosts among the faults."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from services.localmesh.netns import Network
from tools.chaos.run import Options, run

pytestmark = pytest.mark.mesh

SEED = 20261129
# Round 1 fails the database over and adds latency, round 2 crash-restarts it (schedule.py).
POSTGRES_SEED = 20261221
# Round 1 cuts registry-beeline-2 from notifier-2 and fails the database over; round 2
# crash-restarts it, cuts gateway-alpha-2 from notifier-2 and the notifier from the database.
PARTITION_SEED = 17


def _history(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / "history.jsonl").read_text().splitlines()]


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
    history = _history(tmp_path)
    assert len(history) == summary["requests"] + sum(1 for r in history if r["kind"] != "op")


@pytest.mark.timeout(400)
async def test_chaos_on_postgres_rides_a_failover_and_a_crash_restart(tmp_path: Path) -> None:
    options = Options(
        seed=POSTGRES_SEED,
        rounds=2,
        out=tmp_path,
        window=10.0,
        load_seconds=6.0,
        postgres=True,
        replicas=2,
    )
    assert await run(options) == 0, f"a violation: see {tmp_path}/history.jsonl"
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["violations"] == []
    assert summary["database_faults"] == {"failover": 1, "db_latency": 2, "db_crash": 1}
    history = _history(tmp_path)
    answers = [r for r in history if r["kind"] == "op"]
    assert summary["checked"]["answers"] == len(answers) > 0
    assert not [r for r in answers if r["code"] in ("INTERNAL", "UNKNOWN")]
    assert summary["checked"]["terminations_acked"] > 0
    assert summary["checked"]["identified_users"] > 0


@pytest.mark.timeout(400)
async def test_chaos_on_postgres_rides_partitions_between_hosts(tmp_path: Path) -> None:
    why = Network.available()
    if why is not None:
        pytest.skip(why)
    options = Options(
        seed=PARTITION_SEED,
        rounds=2,
        out=tmp_path,
        window=10.0,
        load_seconds=6.0,
        postgres=True,
        replicas=2,
        partitions=True,
    )
    assert await run(options) == 0, f"a violation: see {tmp_path}/history.jsonl"
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["violations"] == []
    assert summary["rounds_run"] == 2
    assert summary["partitions_by_link"] == {
        "registry-beeline-2|notifier-2": 1,
        "gateway-alpha-2|notifier-2": 1,
        "notifier|postgres": 1,
    }
    assert summary["faults_by_kind"]["partition"] == 3
    assert summary["database_faults"]["failover"] == summary["database_faults"]["db_crash"] == 1
    history = _history(tmp_path)
    cuts = [r for r in history if r["kind"] == "fault" and r["name"] == "partition"]
    assert len(cuts) == 3 and all(r["ok"] and r["t1"] - r["t0"] >= 3 for r in cuts)
    answers = [r for r in history if r["kind"] == "op"]
    assert summary["checked"]["answers"] == len(answers) > 0
    assert not [r for r in answers if r["code"] in ("INTERNAL", "UNKNOWN")]
    assert summary["checked"]["terminations_acked"] > 0
    assert summary["checked"]["identified_users"] > 0
