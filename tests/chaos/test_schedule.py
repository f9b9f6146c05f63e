"""The chaos schedule: a pure function of the seed and the options."""

from __future__ import annotations

import pytest

from tools.chaos.schedule import plan_round


@pytest.mark.parametrize("seed", [1, 77])
def test_a_seed_gives_the_same_schedule_and_every_round_races_and_arms_a_failpoint(
    seed: int,
) -> None:
    for round_no in (1, 2, 3):
        plan = plan_round(seed, round_no, load_seconds=10, window=12)
        assert plan == plan_round(seed, round_no, load_seconds=10, window=12)
        assert plan.scenarios[0].kind == "race"
        assert any(f.kind == "failpoint" for f in plan.faults)
    assert plan_round(seed, 1, load_seconds=10, window=12) != plan_round(
        seed + 1, 1, load_seconds=10, window=12
    )


def test_failpoints_narrow_what_a_run_arms() -> None:
    only = ("gateway.verify.after_answer", "registry.verify.after_commit")
    for round_no in range(1, 20):
        plan = plan_round(7, round_no, load_seconds=10, window=12, failpoints=only)
        for fault in plan.faults:
            if fault.kind == "failpoint":
                name = fault.failpoint.split("=", 1)[0]
                assert name in only
                assert fault.service.startswith(name.split(".", 1)[0])


def test_a_failpoint_term_keeps_its_own_action() -> None:
    only = ("gateway.verify.after_answer=sleep(2000)",)
    armed = [
        f.failpoint
        for round_no in range(1, 10)
        for f in plan_round(7, round_no, load_seconds=10, window=12, failpoints=only).faults
        if f.kind == "failpoint"
    ]
    assert armed and set(armed) == set(only)


def test_replicas_and_the_database_widen_what_faults_strike() -> None:
    """On PostgreSQL every round crash-restarts the database or (with a standby) fails it over;
    faults strike every replica of a service; without those options the schedule of a seed is
    the one it always was."""
    plans = [
        plan_round(7, round_no, load_seconds=10, window=12, replicas=2, database="standby")
        for round_no in range(1, 30)
    ]
    kinds = [f.kind for plan in plans for f in plan.faults]
    for plan in plans:
        assert sum(f.kind in ("db_crash", "failover") for f in plan.faults) == 1
    assert {"db_crash", "failover", "db_latency"} <= set(kinds)
    services = {f.service for plan in plans for f in plan.faults}
    assert any(s.endswith("-2") for s in services)
    assert "postgres" in services
    single = [
        plan_round(7, n, load_seconds=10, window=12, database="postgres") for n in range(1, 30)
    ]
    assert "failover" not in {f.kind for plan in single for f in plan.faults}
    for round_no in (1, 2, 3):
        sqlite = plan_round(7, round_no, load_seconds=10, window=12)
        assert all(f.service != "postgres" and not f.service.endswith("-2") for f in sqlite.faults)
        no_database = plan_round(7, round_no, load_seconds=10, window=12, replicas=1)
        assert sqlite == no_database


def test_partitions_cut_a_replica_from_the_database_or_from_the_peer_of_its_lane() -> None:
    links = set()
    for round_no in range(1, 40):
        without = plan_round(
            5, round_no, load_seconds=10, window=12, replicas=2, database="standby"
        )
        plan = plan_round(
            5, round_no, load_seconds=10, window=12, replicas=2, database="standby", partitions=True
        )
        cuts = [f for f in plan.faults if f.kind == "partition"]
        # drawn apart: the rest of the round's plan is the same with or without partitions
        assert [f for f in plan.faults if f.kind != "partition"] == list(without.faults)
        assert plan.scenarios == without.scenarios
        assert 1 <= len(cuts) <= 2
        for cut in cuts:
            assert 2.0 <= cut.seconds <= 10.0
            if cut.peer == "postgres":
                links.add(("replica", "postgres"))
                continue
            kind = cut.service.split("-", 1)[0]
            links.add((kind, cut.peer.split("-", 1)[0]))
            # replica i calls replica i of its peers (the local mesh's lanes)
            assert cut.service.endswith("-2") == cut.peer.endswith("-2")
    assert links == {
        ("replica", "postgres"),
        ("registry", "notifier"),
        ("gateway", "notifier"),
        ("gateway", "registry"),
    }
