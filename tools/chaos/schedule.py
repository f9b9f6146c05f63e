"""The seeded plan of a round: which scenarios start when, and which faults strike when.

Everything here is a pure function of (seed, round, options): the same seed replays the same
schedule. What the mesh then does under it (the timing of each commit) is not deterministic;
the history records it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from services.common.failpoints import CATALOGUE, STORE_FAILPOINTS, Action, term

OPERATORS = {"beeline": "+7903", "megafon": "+7921"}  # operator -> its numbering-plan range
MESSENGERS = ("alpha", "beta")
REGISTRIES = tuple(f"registry-{op}" for op in OPERATORS)
GATEWAYS = tuple(f"gateway-{m}" for m in MESSENGERS)
SERVICES = (*REGISTRIES, "notifier", *GATEWAYS)

# Scenario kinds and their weights after the round's first scenario (always a race).
SCENARIOS = {"lifecycle": 3, "race": 2, "renew": 2, "change": 2, "keep": 1}


@dataclass(frozen=True)
class Scenario:
    """One small script on its own numbers and users (see workload.py)."""

    kind: str
    index: int
    start: float  # seconds into the round
    operator: str
    other_operator: str
    messengers: tuple[str, ...]
    port_out: bool  # end the contract by PortOut to other_operator instead of TerminateContract
    pause: float  # seconds between identifying and ending the contract
    race_offset: float  # race: seconds from the confirmation to the termination


@dataclass(frozen=True)
class Fault:
    at: float  # seconds into the round (faults run one after another, never before `at`)
    kind: str  # kill | failpoint | stall
    service: str
    seconds: float  # kill: downtime; failpoint: longest it stays armed; stall: SIGSTOP length
    failpoint: str = ""  # an IDMESH_FAILPOINTS term


@dataclass(frozen=True)
class RoundPlan:
    round: int
    scenarios: tuple[Scenario, ...]
    faults: tuple[Fault, ...]


def plan_round(
    seed: int,
    round_no: int,
    *,
    load_seconds: float,
    window: float,
    failpoints: tuple[str, ...] = (),
) -> RoundPlan:
    """The round's scenarios (the first always a race) starting within the first part of
    load_seconds, and its faults: one failpoint, then one or two more faults of any kind.
    failpoints: arm only these, names or IDMESH_FAILPOINTS terms (default: any of the
    catalogue but the shared store layer's, each with a seeded action)."""
    names = sorted(failpoints or set(CATALOGUE) - STORE_FAILPOINTS)
    rng = random.Random(f"{seed}/{round_no}")
    count = rng.randint(6, 9)
    scenarios = [
        scenario(rng, index, start=rng.uniform(0.0, load_seconds * 0.6), race=index == 0)
        for index in range(count)
    ]
    faults = [_failpoint_fault(rng, load_seconds, names)]  # every round arms at least one failpoint
    for _ in range(rng.randint(1, 2)):
        pick = rng.choices(["kill", "failpoint", "stall"], [3, 4, 2])[0]
        if pick == "failpoint":
            faults.append(_failpoint_fault(rng, load_seconds, names))
        elif pick == "kill":
            faults.append(
                Fault(
                    at=round(rng.uniform(0.3, load_seconds * 0.8), 3),
                    kind="kill",
                    service=rng.choice(SERVICES),
                    seconds=round(rng.uniform(0.1, 2.0), 3),
                )
            )
        else:
            faults.append(_stall_fault(rng, load_seconds, window))
    faults.sort(key=lambda f: f.at)
    return RoundPlan(round=round_no, scenarios=tuple(scenarios), faults=tuple(faults))


def filler(seed: int, round_no: int, index: int) -> Scenario:
    """A scenario started (now) while the round's faults are still striking: the load goes on
    as long as they do. Its content is seeded; how many a round gets depends on timing."""
    return scenario(random.Random(f"{seed}/{round_no}/{index}"), index, start=0.0)


def filler_gap(seed: int, round_no: int, index: int) -> float:
    return random.Random(f"{seed}/{round_no}/{index}/gap").uniform(0.8, 2.0)


def scenario(rng: random.Random, index: int, *, start: float, race: bool = False) -> Scenario:
    kind = "race" if race else rng.choices(list(SCENARIOS), list(SCENARIOS.values()))[0]
    operator, other = rng.sample(list(OPERATORS), 2)
    both = kind in ("lifecycle", "keep") and rng.random() < 0.5
    return Scenario(
        kind=kind,
        index=index,
        start=round(start, 3),
        operator=operator,
        other_operator=other,
        messengers=MESSENGERS if both else (rng.choice(MESSENGERS),),
        port_out=rng.random() < 0.35,
        pause=round(rng.uniform(0.0, 2.0), 3),
        race_offset=round(rng.uniform(0.0, 0.4), 3),
    )


def _failpoint_fault(rng: random.Random, load_seconds: float, terms: list[str]) -> Fault:
    """Arm one of terms: a name gets a seeded action, a name=ACTION term its own action."""
    chosen = rng.choice(terms)
    name, forced, _ = chosen.partition("=")
    prefix = name.split(".", 1)[0]
    service = {
        "registry": rng.choice(REGISTRIES),
        "gateway": rng.choice(GATEWAYS),
        "notifier": "notifier",
    }[prefix]
    roll = rng.random()
    if roll < 0.7:
        action = Action()
    elif roll < 0.85:
        action = Action(probability=rng.choice([0.3, 0.5, 0.7]))
    else:
        action = Action(sleep_ms=rng.choice([300, 800, 2000]))
    return Fault(
        at=round(rng.uniform(0.0, load_seconds * 0.5), 3),
        kind="failpoint",
        service=service,
        seconds=round(rng.uniform(6.0, 12.0), 3),
        failpoint=chosen if forced else term(name, action),
    )


def _stall_fault(rng: random.Random, load_seconds: float, window: float) -> Fault:
    if rng.random() < 0.6:
        service = rng.choice(REGISTRIES)
        # Sometimes past the verification window: the gateway must fail those identifications
        # OPERATOR_TIMEOUT, and the registry's late answers must change nothing.
        seconds = window + rng.uniform(1.0, 3.0) if rng.random() < 0.35 else rng.uniform(1.0, 4.0)
    else:
        service = "notifier"
        seconds = rng.uniform(2.0, 6.0)
    return Fault(
        at=round(rng.uniform(0.3, load_seconds * 0.7), 3),
        kind="stall",
        service=service,
        seconds=round(seconds, 3),
    )


def phone(operator: str, round_no: int, scenario: int, k: int) -> str:
    """A number in the operator's range, unique to (round, scenario, k)."""
    return f"{OPERATORS[operator]}{round_no % 1000:03d}{scenario:02d}{k:02d}"
