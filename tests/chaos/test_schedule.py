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
