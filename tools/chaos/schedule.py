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


DATABASE = "postgres"  # the service name of the database faults


@dataclass(frozen=True)
class Fault:
    at: float  # seconds into the round (faults run one after another, never before `at`)
    kind: str  # kill | failpoint | stall | db_crash | failover | db_latency | partition
    service: str  # a service replica ("gateway-alpha-2"), or DATABASE
    # kill: downtime; failpoint: longest it stays armed; stall: SIGSTOP length; db_crash: the
    # database's downtime; db_latency: how long the latency lasts; partition: how long it lasts
    seconds: float
    failpoint: str = ""  # an IDMESH_FAILPOINTS term
    delay_ms: int = 0  # db_latency: added to every chunk either way
    peer: str = ""  # partition: the other end (a replica, or DATABASE)


def replicas_of(deployments: tuple[str, ...], replicas: int) -> tuple[str, ...]:
    """Every replica's name: "notifier", "notifier-2", ... (the local mesh's names)."""
    return tuple(d if r == 1 else f"{d}-{r}" for d in deployments for r in range(1, replicas + 1))


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
    replicas: int = 1,
    database: str = "",
    partitions: bool = False,
) -> RoundPlan:
    """The round's scenarios (the first always a race) starting within the first part of
    load_seconds, and its faults: one failpoint, then one or two more faults of any kind, on
    any replica of a service. failpoints: arm only these, names or IDMESH_FAILPOINTS terms
    (default: any of the catalogue but the shared store layer's, each with a seeded action).
    database: "" (SQLite: no database faults), "postgres" (a crash-restart of the server, and
    sometimes latency) or "standby" (a crash-restart or a failover, and sometimes latency).
    partitions: one or two partitions between hosts too (_partition_faults), drawn from a
    generator of their own, so that the rest of the plan is the same with or without them."""
    names = sorted(failpoints or set(CATALOGUE) - STORE_FAILPOINTS)
    rng = random.Random(f"{seed}/{round_no}")
    services = replicas_of(SERVICES, replicas)
    count = rng.randint(6, 9)
    scenarios = [
        scenario(rng, index, start=rng.uniform(0.0, load_seconds * 0.6), race=index == 0)
        for index in range(count)
    ]
    # every round arms at least one failpoint
    faults = [_failpoint_fault(rng, load_seconds, names, replicas)]
    for _ in range(rng.randint(1, 2)):
        pick = rng.choices(["kill", "failpoint", "stall"], [3, 4, 2])[0]
        if pick == "failpoint":
            faults.append(_failpoint_fault(rng, load_seconds, names, replicas))
        elif pick == "kill":
            faults.append(
                Fault(
                    at=round(rng.uniform(0.3, load_seconds * 0.8), 3),
                    kind="kill",
                    service=rng.choice(services),
                    seconds=round(rng.uniform(0.1, 2.0), 3),
                )
            )
        else:
            faults.append(_stall_fault(rng, load_seconds, window, replicas))
    if database:
        faults += _database_faults(rng, load_seconds, standby=database == "standby")
    if partitions:
        faults += _partition_faults(
            random.Random(f"{seed}/{round_no}/partitions"), load_seconds, replicas
        )
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


def _database_faults(rng: random.Random, load_seconds: float, *, standby: bool) -> list[Fault]:
    """One crash-restart of the primary (down 2 to 5 s) or, with a standby, as often a
    failover; and in half the rounds 20 to 150 ms of latency for 2 to 5 s."""
    kind = rng.choice(["db_crash", "failover"]) if standby else "db_crash"
    faults = [
        Fault(
            at=round(rng.uniform(0.5, load_seconds * 0.6), 3),
            kind=kind,
            service=DATABASE,
            seconds=round(rng.uniform(2.0, 5.0), 3) if kind == "db_crash" else 0.0,
        )
    ]
    if rng.random() < 0.5:
        faults.append(
            Fault(
                at=round(rng.uniform(0.3, load_seconds * 0.8), 3),
                kind="db_latency",
                service=DATABASE,
                seconds=round(rng.uniform(2.0, 5.0), 3),
                delay_ms=rng.choice([20, 50, 150]),
            )
        )
    return faults


def lane_peer(replica: str, deployment: str) -> str:
    """The replica of deployment that replica calls: the same replica number (the local
    mesh's lanes; a mesh with as many replicas of each)."""
    number = replica.rpartition("-")[2]
    return f"{deployment}-{number}" if number.isdigit() else deployment


# The links a partition cuts, and their weights: a replica and the database; a registry and
# the notifier it publishes to; a gateway and the notifier it streams from; a gateway and the
# registry it asks.
PARTITION_LINKS = {
    "database": 3,
    "registry-notifier": 2,
    "gateway-notifier": 2,
    "gateway-registry": 1,
}


def _partition_faults(rng: random.Random, load_seconds: float, replicas: int) -> list[Fault]:
    """One partition (in half the rounds two) between two hosts, lasting 2 to 10 seconds: past
    a gateway's 6-second lease term in some rounds."""
    faults = []
    for _ in range(rng.choice([1, 2])):
        link = rng.choices(list(PARTITION_LINKS), list(PARTITION_LINKS.values()))[0]
        if link == "database":
            service = rng.choice(replicas_of(SERVICES, replicas))
            peer = DATABASE
        elif link == "registry-notifier":
            service = rng.choice(replicas_of(REGISTRIES, replicas))
            peer = lane_peer(service, "notifier")
        elif link == "gateway-notifier":
            service = rng.choice(replicas_of(GATEWAYS, replicas))
            peer = lane_peer(service, "notifier")
        else:
            service = rng.choice(replicas_of(GATEWAYS, replicas))
            peer = lane_peer(service, rng.choice(REGISTRIES))
        faults.append(
            Fault(
                at=round(rng.uniform(0.3, load_seconds * 0.7), 3),
                kind="partition",
                service=service,
                seconds=round(rng.uniform(2.0, 10.0), 3),
                peer=peer,
            )
        )
    return faults


def _failpoint_fault(
    rng: random.Random, load_seconds: float, terms: list[str], replicas: int = 1
) -> Fault:
    """Arm one of terms: a name gets a seeded action, a name=ACTION term its own action."""
    chosen = rng.choice(terms)
    name, forced, _ = chosen.partition("=")
    prefix = name.split(".", 1)[0]
    service = {
        "registry": rng.choice(replicas_of(REGISTRIES, replicas)),
        "gateway": rng.choice(replicas_of(GATEWAYS, replicas)),
        "notifier": rng.choice(replicas_of(("notifier",), replicas)),
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


def _stall_fault(
    rng: random.Random, load_seconds: float, window: float, replicas: int = 1
) -> Fault:
    if rng.random() < 0.6:
        service = rng.choice(replicas_of(REGISTRIES, replicas))
        # Sometimes past the verification window: the gateway must fail those identifications
        # OPERATOR_TIMEOUT, and the registry's late answers must change nothing.
        seconds = window + rng.uniform(1.0, 3.0) if rng.random() < 0.35 else rng.uniform(1.0, 4.0)
    else:
        service = rng.choice(replicas_of(("notifier",), replicas))
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
