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
from services.messenger_gateway.identification.model import State
from services.messenger_gateway.main import open_stores
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
