"""Failpoints: named places inside the critical windows where a fault test can act.

Modelled on etcd's gofail. ``IDMESH_FAILPOINTS`` arms them, a comma-separated list of terms
``name`` or ``name=action``:

    IDMESH_FAILPOINTS="registry.verify.after_commit"                 crash at the first hit
    IDMESH_FAILPOINTS="notifier.stream.after_send=25%"               crash at a hit, p = 0.25
    IDMESH_FAILPOINTS="gateway.notice.after_apply=sleep(200)"        stall 200 ms at every hit
    IDMESH_FAILPOINTS="registry.relay.after_publish=50%sleep(1500)"  stall at half of the hits
    IDMESH_FAILPOINTS="store.commit.after_commit=error"              lose the connection there

An action is ``crash`` (the default), ``sleep(MS)`` or ``error``, optionally prefixed by a
probability ``P%`` (0 < P <= 100). A crash does not clean up, flush or reply: it calls
``os._exit(137)``, which is what ``kill -9`` at that instant would leave behind (it prints one
JSON line ``failpoint.crash`` on stderr first). A sleep (after a ``failpoint.sleep`` line on stderr)
pauses the code there: ``failpoint(name)``, on the database's writer thread, blocks that thread
with the transaction open; ``await async_failpoint(name)``, in a coroutine, pauses only that
coroutine while the rest of the process goes on (so a window is stretched: a notice can be
applied while a verification holds an answer it has not recorded). An error raises
``InjectedFault``, a ConnectionError: what a connection lost at that instant raises (gofail's
``return``), so the code's handling of a lost store is what runs.

The variable is read once, when this module is imported (a service's start); a bad value
stops the service with a message naming the variable. Unarmed (always, outside fault tests) a
failpoint costs one dict lookup. ``make chaos`` (tools/chaos) arms them; docs/chaos.md lists
them for people. ``CATALOGUE`` below is the list, and a test checks that every
``failpoint("...")`` in the code is in it and in docs/chaos.md.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NoReturn

ENV = "IDMESH_FAILPOINTS"

# Every failpoint in the code: name -> the window it sits in. Names are <service>.<flow>.<where>;
# the service prefix says which process a chaos run must restart to arm it; "store." ones sit
# in the shared store layer, in every service (STORE_FAILPOINTS).
CATALOGUE: Mapping[str, str] = {
    "store.commit.before_commit": (
        "any service's write transaction is written and about to COMMIT: a sleep here while "
        "the database goes away sends the COMMIT on a dead connection (answered STORE_UNAVAILABLE "
        "or COMMIT_OUTCOME_UNKNOWN, nothing committed)"
    ),
    "store.commit.after_commit": (
        "any service's write transaction is committed, the database's answer not yet seen: "
        "with `error` the commit reads as a lost connection, answered COMMIT_OUTCOME_UNKNOWN, "
        "and the caller's retry with its idempotency key finds what was committed"
    ),
    "registry.verify.before_commit": (
        "VerifySubscriber's transaction (binding and stored answer) is written but not "
        "committed: nothing of it survives"
    ),
    "registry.verify.after_commit": (
        "VerifySubscriber's answer (and a new binding) is committed, the reply not sent: the "
        "gateway retries with the same request id and gets the stored answer"
    ),
    "registry.terminate.after_commit": (
        "TerminateContract or PortOut is committed with its notices in the outbox, the reply "
        "not sent: the operator's system does not know it happened"
    ),
    "registry.relay.after_publish": (
        "the notifier acknowledged a Publish, the outbox rows are not yet marked published: the "
        "relay sends them again after the restart"
    ),
    "notifier.publish.before_commit": (
        "a Publish batch is written but not committed: nothing of it survives"
    ),
    "notifier.publish.after_commit": (
        "a Publish batch is committed, the acknowledgement not sent: the relay sends it again"
    ),
    "notifier.stream.after_send": (
        "a message of notices was handed to a Subscribe stream, the gateway has not acknowledged "
        "them: they are streamed again after the restart"
    ),
    "notifier.ack.before_commit": (
        "an Ack is written but not committed: the gateway acknowledges again"
    ),
    "gateway.verify.after_begin": (
        "the identification is stored VERIFYING, the operator not yet asked: the restarted "
        "gateway resumes it with the same request id"
    ),
    "gateway.verify.after_answer": (
        "the operator's answer was received, not yet recorded: the restarted gateway asks again "
        "with the same request id"
    ),
    "gateway.notice.before_apply": (
        "a stream message's notices were received, not yet applied: a consumer paused here "
        "until its lease expired and another replica took it has its batch refused (the lease's "
        "fencing token), and the new holder applies it"
    ),
    "gateway.policy.shard_load": (
        "a replica holds a policy shard's lease and has read the shard's snapshot, not yet "
        "caught up and served it: decisions that need the shard wait (forwarded ones are asked "
        "again), none is answered from it"
    ),
    "gateway.notice.before_commit": (
        "a stream message's notices are written (inbox, revocations, cursor) but not committed: "
        "nothing of the batch survives, and the restarted gateway applies it all from its cursor"
    ),
    "gateway.notice.after_apply": (
        "a stream message's notices are applied (inbox, revocations, cursor committed), not yet "
        "acknowledged to the notifier: they are streamed again and must change nothing"
    ),
}

STORE_FAILPOINTS: frozenset[str] = frozenset(n for n in CATALOGUE if n.startswith("store."))

_TERM = re.compile(
    r"^(?P<name>[a-z0-9_.]+)"
    r"(?:=(?:(?P<percent>\d+(?:\.\d+)?)%)?(?P<action>crash|error|sleep\((?P<ms>\d+)\))?)?$"
)


class InjectedFault(ConnectionError):
    """Raised by a failpoint armed with ``error``: a connection lost at that instant."""


@dataclass(frozen=True, slots=True)
class Action:
    """What an armed failpoint does at a hit: crash, sleep or raise, with a probability."""

    sleep_ms: int | None = None  # None: crash (or raise, with error)
    probability: float = 1.0
    error: bool = False

    def _acts(self) -> bool:
        return self.probability >= 1.0 or random.random() < self.probability

    def fire(self, name: str) -> None:
        if not self._acts():
            return
        if self.error:
            _say("failpoint.error", name)
            raise InjectedFault(f"failpoint {name}: the connection was lost")
        if self.sleep_ms is not None:
            _say("failpoint.sleep", name)
            time.sleep(self.sleep_ms / 1000)
            return
        _crash(name)

    async def fire_async(self, name: str) -> None:
        if not self._acts():
            return
        if self.error:
            _say("failpoint.error", name)
            raise InjectedFault(f"failpoint {name}: the connection was lost")
        if self.sleep_ms is not None:
            _say("failpoint.sleep", name)
            await asyncio.sleep(self.sleep_ms / 1000)
            return
        _crash(name)


def _crash(name: str) -> NoReturn:
    _say("failpoint.crash", name)
    os._exit(137)


def _say(event: str, name: str) -> None:
    """One JSON line on stderr (the service's log), whatever the logging setup."""
    print(f'{{"event": "{event}", "failpoint": "{name}"}}', file=sys.stderr, flush=True)


def parse(spec: str) -> dict[str, Action]:
    """IDMESH_FAILPOINTS's value -> {name: action}; ValueError naming the variable and the term
    when a term is malformed or names no known failpoint."""
    armed: dict[str, Action] = {}
    for raw in spec.split(","):
        term = raw.strip()
        if not term:
            continue
        match = _TERM.match(term)
        if match is None or (match["percent"] is None and match["action"] is None and "=" in term):
            raise ValueError(
                f"{ENV}: {term!r} is not name, name=crash, name=sleep(MS), name=error or "
                "name=P%ACTION"
            )
        name = match["name"]
        if name not in CATALOGUE:
            raise ValueError(f"{ENV}: unknown failpoint {name!r} (known: {', '.join(CATALOGUE)})")
        probability = 1.0 if match["percent"] is None else float(match["percent"]) / 100
        if not 0 < probability <= 1:
            raise ValueError(f"{ENV}: {term!r}: the probability must be above 0% and at most 100%")
        ms = match["ms"]
        armed[name] = Action(
            sleep_ms=None if ms is None else int(ms),
            probability=probability,
            error=match["action"] == "error",
        )
    return armed


def term(name: str, action: Action) -> str:
    """The IDMESH_FAILPOINTS term that arms name with action (parse's inverse)."""
    percent = "" if action.probability >= 1.0 else f"{action.probability * 100:g}%"
    what = "error" if action.error else "crash"
    if action.sleep_ms is not None:
        what = f"sleep({action.sleep_ms})"
    return f"{name}={percent}{what}"


_armed: dict[str, Action] = parse(os.environ.get(ENV, ""))


def armed() -> frozenset[str]:
    """The names armed in this process."""
    return frozenset(_armed)


def reload() -> None:
    """Read IDMESH_FAILPOINTS again (tests that arm failpoints in-process)."""
    global _armed
    _armed = parse(os.environ.get(ENV, ""))


def failpoint(name: str) -> None:
    action = _armed.get(name)
    if action is not None:
        action.fire(name)


async def async_failpoint(name: str) -> None:
    """failpoint() in a coroutine: a sleep pauses only this coroutine while the rest of the
    process goes on (gofail's sleep in a goroutine), which is what stretches a window; a crash
    is the same. Unarmed: one dict lookup and a coroutine that returns at once."""
    action = _armed.get(name)
    if action is not None:
        await action.fire_async(name)
