"""What one identification costs the stores: the write transactions and the reads from
StartIdentification to the IDENTIFIED answer, counted at the store ports (the identification
store, with the ported-numbers table the router asks, and the delivery policy's store, whose
index follows every identification)."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from services.common.config import Env
from services.common.storage import StoreSettings
from services.messenger_gateway.identification.model import Identification, Reason, State
from services.messenger_gateway.main import open_stores
from services.messenger_gateway.policy.model import ChangeKind, PolicyChange
from services.messenger_gateway.policy.service import PolicyService, PolicySettings
from services.messenger_gateway.routing.router import PortedNumbersTable, Router
from services.messenger_gateway.service import GatewayService
from tests.messenger_gateway.fakes import (
    BEELINE_PHONE,
    FakeClock,
    RecordingSms,
    make_service,
)

WRITES = frozenset({"run", "run_grouped"})


class Counting:
    """A store whose coroutine methods are counted by name (then run on the real store)."""

    def __init__(self, store: Any, calls: Counter[str], prefix: str) -> None:
        self._store, self._calls, self._prefix = store, calls, prefix

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if not callable(attr) or name.startswith("_") or name == "changes_signalled":
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            self._calls[self._prefix + name] += 1
            return attr(*args, **kwargs)

        return counted


class _Carriers:
    name = "static"

    def carrier_for(self, e164: str) -> str | None:
        return "beeline"


@dataclass
class Rig:
    service: GatewayService
    sms: RecordingSms
    calls: Counter[str]
    policy: PolicyService


@pytest.fixture
async def rig(tmp_path: Path, store_env: dict[str, str]) -> AsyncIterator[Rig]:
    environ = {f"IDMESH_{key}": value for key, value in store_env.items()}
    settings = StoreSettings.from_env(Env({"IDMESH_DB_PATH": str(tmp_path / "gw.db"), **environ}))
    async with AsyncExitStack() as exits:
        stores = await exits.enter_async_context(open_stores(settings))
        calls: Counter[str] = Counter()
        gateway = Counting(stores.gateway, calls, "")
        clock = FakeClock()
        policy = PolicyService(
            PolicySettings(), store=Counting(stores.policy, calls, "policy."), clock=clock
        )
        await policy.start()
        sms = RecordingSms()
        service = make_service(gateway, sms=sms, clock=clock, policy=policy)
        # the router asks the ported-numbers table first, as the gateway's does
        service.identifications._router = Router(
            [PortedNumbersTable(gateway), _Carriers()],
            carriers={"beeline": "beeline"},
            operators={"beeline", "megafon"},
        )
        exits.push_async_callback(service.close)
        yield Rig(service, sms, calls, policy)


async def _identify(rig: Rig, user: str) -> None:
    started = await rig.service.start_identification(user, BEELINE_PHONE)
    done = await rig.service.confirm_possession(
        started.identification_id, rig.sms.code_for(started.identification_id), wait=5
    )
    assert done.state is State.IDENTIFIED
    assert rig.policy.index.is_identified(user)  # the next decision sees it


def _split(calls: Counter[str]) -> tuple[int, dict[str, int]]:
    writes = sum(n for name, n in calls.items() if name in WRITES)
    reads = {name: n for name, n in calls.items() if name not in WRITES}
    return writes, reads


@pytest.mark.parametrize("again", [False, True], ids=["new user", "identified again"])
async def test_an_identification_takes_three_writes_and_one_read(
    rig: Rig, engine: str, again: bool
) -> None:
    if again:
        await _identify(rig, "user")
    rig.calls.clear()
    await _identify(rig, "user")
    writes, reads = _split(rig.calls)
    assert writes == 3  # start, confirm, the answer: nothing written that changes nothing
    # the route's ported-numbers look-up; the policy index is brought along by the writes' own
    # transactions (each returns the change-log entries it logged, with their versions), with no
    # read of its own, on either engine
    assert reads == {"ported_number": 1}


class _LogNotRead:
    """A policy store whose change log is never read in these tests (counted if it is)."""

    def __init__(self) -> None:
        self.reads = 0

    async def changes_after(self, version: int, limit: int) -> list[PolicyChange]:
        self.reads += 1
        return []


def make_identification(user: str, state: State) -> Identification:
    now = FakeClock().now()
    return Identification(
        identification_id=f"id-{user}",
        user_id=user,
        phone_number=BEELINE_PHONE,
        state=state,
        reason=Reason.UNSPECIFIED,
        operator_id="beeline",
        started_at=now,
        code_expires_at=now,
        attempts_left=3,
    )


def _entry(version: int, user: str, state: State) -> PolicyChange:
    return PolicyChange(
        version=version,
        changed_at=FakeClock().now(),
        kind=ChangeKind.IDENTIFICATION,
        user_id=user,
        phone_number=BEELINE_PHONE,
        value=state.value,
    )


async def test_entries_told_out_of_order_apply_in_version_order_without_a_read() -> None:
    """Two writes committed as versions 1 and 2 resume in the other order: the second's entry
    waits for the first's, and both apply, in order, once it comes; an entry the index has
    passed is dropped."""
    store = _LogNotRead()
    policy = PolicyService(PolicySettings(), store=store, clock=FakeClock())  # type: ignore[arg-type]
    first = make_identification("a", State.AWAITING_CODE)
    second = make_identification("b", State.IDENTIFIED)
    await policy.identification_changed(second, [_entry(2, "b", State.IDENTIFIED)])
    assert policy.index.version == 0  # version 1 is missing: nothing applied out of order
    assert store.reads == 1  # b's answer is stale until then: the log is asked (empty here)
    await policy.identification_changed(first, [_entry(1, "a", State.AWAITING_CODE)])
    assert policy.index.version == 2
    assert policy.index.is_known("a") and policy.index.is_identified("b")
    assert store.reads == 1  # the gap filled by the told entry itself
    await policy.identification_changed(first, [_entry(1, "a", State.AWAITING_CODE)])
    assert policy.index.version == 2 and store.reads == 1  # passed: dropped, nothing read
