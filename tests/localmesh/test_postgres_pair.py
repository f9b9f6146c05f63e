"""The primary and synchronous standby of `make up-pg STANDBY=1` (PostgresPair), without a mesh:
its data kept between starts whichever server is the primary, a failover that refuses when there
is no standby to promote and changes nothing then, and a stop that leaves nothing running."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.localmesh import MeshError
from services.localmesh.postgres import PostgresPair

REPLICATION = "SELECT application_name, state, sync_state FROM pg_stat_replication"


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "postgres-pair"
    if (tmp_path / "postgres-pair" / PostgresPair.STATE).exists():
        PostgresPair(tmp_path / "postgres-pair").stop()


def test_the_pair_keeps_its_data_and_roles_between_starts(folder: Path) -> None:
    pair = PostgresPair(folder)
    pair.start()
    assert pair.primary_name == "pg-a"
    assert pair.primary.query(REPLICATION) == [["standby", "streaming", "sync"]]
    pair.primary.query("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('before')")

    done = pair.failover()
    assert (done.crashed, done.promoted) == ("pg-a", "pg-b")
    assert pair.primary_name == "pg-b"
    pair.primary.query("INSERT INTO kept VALUES ('after')")
    pair.stop()
    assert not pair.server("pg-a").alive() and not pair.server("pg-b").alive()

    again = PostgresPair(folder)  # as the next `make up-pg STANDBY=1` finds it
    assert again.primary_name == "pg-b" and again.ports == pair.ports
    again.start()
    assert again.primary.query("SELECT pg_is_in_recovery()") == [["f"]]
    assert again.primary.query(REPLICATION) == [["standby", "streaming", "sync"]]
    assert again.primary.query("SELECT v FROM kept ORDER BY v") == [["after"], ["before"]]
    assert again.standby.query("SELECT count(*) FROM kept") == [["2"]]


def test_a_failover_without_a_standby_is_refused_and_changes_nothing(folder: Path) -> None:
    pair = PostgresPair(folder)
    pair.start()
    state = (folder / PostgresPair.STATE).read_text()
    pair.primary.set("synchronous_standby_names", "''")  # (so that the stop below waits on none)
    pair.standby.stop("fast")
    with pytest.raises(MeshError, match="pg-b is not a running standby: nothing to promote"):
        pair.failover()
    assert (folder / PostgresPair.STATE).read_text() == state
    assert json.loads(state)["primary"] == "pg-a"
    assert pair.primary.alive() and pair.primary.query("SELECT pg_is_in_recovery()") == [["f"]]
