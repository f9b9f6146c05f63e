"""The scenarios a round runs concurrently, each on its own numbers and users, recording every
request (every attempt of it) in the history.

A client retries a request whose outcome it could not read (UNAVAILABLE, DEADLINE_EXCEEDED)
or that was shed (RESOURCE_EXHAUSTED: refused before any work) a few times, like a real
operator's system or front end would; each attempt is its own record.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from idmesh.gateway.v1 import gateway_pb2
from idmesh.registry.v1 import registry_pb2

from services.localmesh import sms
from tools.chaos.client import Client, status_of
from tools.chaos.history import History
from tools.chaos.schedule import Scenario, phone

State = gateway_pb2.IdentificationState
FINAL = {
    State.IDENTIFICATION_STATE_IDENTIFIED,
    State.IDENTIFICATION_STATE_NOT_COMPLETED,
    State.IDENTIFICATION_STATE_REVOKED,
}
ADMIN_TIMEOUT = 5.0
ATTEMPTS = 8  # with the delays below, about 11 s: a restart takes a few seconds


def _ident(i: gateway_pb2.Identification) -> dict[str, Any]:
    return {
        "identification_id": i.identification_id,
        "state": State.Name(i.state),
        "reason": gateway_pb2.Reason.Name(i.reason),
        "operator_id": i.operator_id,
    }


def _subscriber(s: registry_pb2.Subscriber) -> dict[str, Any]:
    return {
        "contract_id": s.contract_id,
        "state": registry_pb2.ContractState.Name(s.state),
        "bindings": [[b.messenger_id, b.identification_code] for b in s.bindings],
    }


class Workload:
    def __init__(self, client: Client, history: History, round_no: int, window: float) -> None:
        self.client = client
        self.history = history
        self.round = round_no
        self.window = window

    # --- one request, retried while its outcome is unknown ----------------------------------

    async def call(
        self,
        name: str,
        args: dict[str, Any],
        send: Callable[[], Awaitable[Any]],
        result: Callable[[Any], dict[str, Any]],
        *,
        attempts: int = ATTEMPTS,
    ) -> Any | None:
        for attempt in range(attempts):
            record = self.history.begin("op", name, self.round, attempt=attempt, **args)
            try:
                reply = await send()
            except Exception as exc:
                ok, code = status_of(exc)
                self.history.end(record, ok, code)
                shed = code == "RESOURCE_EXHAUSTED"  # refused before any work: safe to retry
                if (ok is None or shed) and attempt + 1 < attempts:
                    await asyncio.sleep(min(0.5 * (attempt + 1), 2.0))
                    continue
                return None
            self.history.end(record, True, **result(reply))
            return reply
        return None

    # --- operator side ------------------------------------------------------------------------

    async def create(self, operator: str, number: str, contract_id: str) -> bool:
        stub = self.client.registry_admin(operator)
        request = registry_pb2.CreateSubscriberRequest(phone_number=number, contract_id=contract_id)
        reply = await self.call(
            "create",
            {"operator": operator, "phone": number, "contract_id": contract_id},
            lambda: stub.CreateSubscriber(request, timeout=ADMIN_TIMEOUT),
            lambda r: _subscriber(r.subscriber),
        )
        return reply is not None or await self._contract_is(operator, number, contract_id)

    async def _contract_is(self, operator: str, number: str, contract_id: str) -> bool:
        """After a create whose outcome was unknown and whose retry was refused: did it land?"""
        stub = self.client.registry_admin(operator)
        request = registry_pb2.GetSubscriberRequest(phone_number=number)
        reply = await self.call(
            "get_subscriber",
            {"operator": operator, "phone": number},
            lambda: stub.GetSubscriber(request, timeout=ADMIN_TIMEOUT),
            lambda r: _subscriber(r.subscriber),
        )
        return reply is not None and reply.subscriber.contract_id == contract_id

    async def end_contract(self, operator: str, number: str, port_to: str = "") -> None:
        stub = self.client.registry_admin(operator)
        args = {"operator": operator, "phone": number}
        if port_to:
            port = registry_pb2.PortOutRequest(phone_number=number, recipient_operator_id=port_to)
            await self.call(
                "port_out",
                {**args, "to": port_to},
                lambda: stub.PortOut(port, timeout=ADMIN_TIMEOUT),
                lambda r: {**_subscriber(r.subscriber), "notices_queued": r.notices_queued},
            )
            return
        request = registry_pb2.TerminateContractRequest(phone_number=number)
        await self.call(
            "terminate",
            args,
            lambda: stub.TerminateContract(request, timeout=ADMIN_TIMEOUT),
            lambda r: {**_subscriber(r.subscriber), "notices_queued": r.notices_queued},
        )

    # --- messenger side -----------------------------------------------------------------------

    async def start(
        self, messenger: str, user: str, number: str, *, change: bool = False
    ) -> str | None:
        stub = self.client.gateway(messenger)
        args = {"messenger": messenger, "user": user, "phone": number}
        reply: Any
        if change:
            changing = gateway_pb2.ChangePhoneNumberRequest(user_id=user, phone_number=number)
            reply = await self.call(
                "change_number",
                args,
                lambda: stub.ChangePhoneNumber(changing, timeout=ADMIN_TIMEOUT),
                lambda r: {**_ident(r.identification), "previous": _ident(r.previous)},
                attempts=1,  # a retry would be refused as the same number
            )
        else:
            request = gateway_pb2.StartIdentificationRequest(user_id=user, phone_number=number)
            reply = await self.call(
                "start",
                args,
                lambda: stub.StartIdentification(request, timeout=ADMIN_TIMEOUT),
                lambda r: _ident(r.identification),
            )
        return None if reply is None else str(reply.identification.identification_id)

    async def confirm(self, messenger: str, user: str, identification_id: str) -> str | None:
        """Confirm the one-time code, then follow the identification to a final state (bounded
        by the window); the state last seen, or None."""
        for _ in range(3):
            outbox = Path(self.client.mesh.services[f"gateway-{messenger}"].info["sms_outbox"])
            code = await asyncio.to_thread(
                sms.latest_code, outbox, identification_id=identification_id
            )
            if code is None:
                return None
            stub = self.client.gateway(messenger)
            request = gateway_pb2.ConfirmPossessionRequest(
                identification_id=identification_id, code=code
            )
            reply = await self.call(
                "confirm",
                {"messenger": messenger, "user": user, "identification_id": identification_id},
                lambda: stub.ConfirmPossession(request, timeout=self.window + 5),  # noqa: B023
                lambda r: _ident(r.identification),
                attempts=1,  # after an unknown outcome, look before confirming again
            )
            if reply is not None and reply.identification.state in FINAL:
                return State.Name(reply.identification.state)
            seen = await self.settle(messenger, user, identification_id)
            if seen != "IDENTIFICATION_STATE_AWAITING_CODE":
                return seen
        return None

    async def settle(self, messenger: str, user: str, identification_id: str) -> str | None:
        """Poll the user's identification until it leaves VERIFYING (bounded)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.window + 15
        stub = self.client.gateway(messenger)
        request = gateway_pb2.GetIdentificationRequest(user_id=user)
        while loop.time() < deadline:
            reply = await self.call(
                "get",
                {"messenger": messenger, "user": user},
                lambda: stub.GetIdentification(request, timeout=3),
                lambda r: _ident(r.identification),
                attempts=1,
            )
            if reply is not None:
                ident = reply.identification
                if ident.identification_id != identification_id:
                    return None  # replaced meanwhile
                if ident.state != State.IDENTIFICATION_STATE_VERIFYING:
                    return State.Name(ident.state)
            await asyncio.sleep(0.3)
        return None

    async def identify(
        self, messenger: str, user: str, number: str, *, change: bool = False
    ) -> str | None:
        identification_id = await self.start(messenger, user, number, change=change)
        if identification_id is None:
            return None
        return await self.confirm(messenger, user, identification_id)

    async def access(self, messenger: str, user: str) -> None:
        stub = self.client.gateway(messenger)
        request = gateway_pb2.CheckAccessRequest(user_id=user)
        await self.call(
            "access",
            {"messenger": messenger, "user": user},
            lambda: stub.CheckAccess(request, timeout=3),
            lambda r: {"allowed": r.allowed, "reason": gateway_pb2.Reason.Name(r.reason)},
            attempts=2,
        )

    # --- scenarios ----------------------------------------------------------------------------

    async def run(self, scenario: Scenario, began: float) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(max(0.0, began + scenario.start - loop.time()))
        play = {
            "lifecycle": self.lifecycle,
            "race": self.race,
            "renew": self.renew,
            "change": self.change,
            "keep": self.keep,
        }[scenario.kind]
        await play(scenario)

    def _user(self, s: Scenario, messenger: str) -> str:
        return f"r{self.round}s{s.index}-{messenger}"

    def _contract(self, s: Scenario, k: int, n: int = 0) -> str:
        return f"C{self.round}-{s.index}-{k}-{n}"

    async def lifecycle(self, s: Scenario) -> None:
        """Identify at one or both messengers, end the contract (terminate or port out); after a
        port-out the recipient makes a contract and the users identify again (hint path)."""
        number = phone(s.operator, self.round, s.index, 0)
        if not await self.create(s.operator, number, self._contract(s, 0)):
            return
        await asyncio.gather(*(self.identify(m, self._user(s, m), number) for m in s.messengers))
        await asyncio.sleep(s.pause)
        await self.end_contract(s.operator, number, s.other_operator if s.port_out else "")
        if s.port_out and await self.create(s.other_operator, number, self._contract(s, 0, 1)):
            await asyncio.gather(
                *(self.identify(m, self._user(s, m), number) for m in s.messengers)
            )
        for m in s.messengers:
            await self.access(m, self._user(s, m))

    async def race(self, s: Scenario) -> None:
        """The contract ends while the user's confirmation is on its way to the operator."""
        number = phone(s.operator, self.round, s.index, 0)
        if not await self.create(s.operator, number, self._contract(s, 0)):
            return
        m = s.messengers[0]
        user = self._user(s, m)
        identification_id = await self.start(m, user, number)
        if identification_id is None:
            return

        async def end_soon() -> None:
            await asyncio.sleep(s.race_offset)
            await self.end_contract(s.operator, number, s.other_operator if s.port_out else "")

        await asyncio.gather(self.confirm(m, user, identification_id), end_soon())
        await self.access(m, user)

    async def renew(self, s: Scenario) -> None:
        """Identify, end the contract, a new contract on the same number, identify again."""
        number = phone(s.operator, self.round, s.index, 0)
        m = s.messengers[0]
        user = self._user(s, m)
        if not await self.create(s.operator, number, self._contract(s, 0)):
            return
        await self.identify(m, user, number)
        await asyncio.sleep(s.pause)
        await self.end_contract(s.operator, number)
        if not await self.create(s.operator, number, self._contract(s, 0, 1)):
            return
        await self.identify(m, user, number)
        if s.port_out:  # reused here as "end the second contract too"
            await self.end_contract(s.operator, number)
        await self.access(m, user)

    async def change(self, s: Scenario) -> None:
        """The user moves to another number; then the old number's contract ends, which must not
        touch the new identification."""
        old = phone(s.operator, self.round, s.index, 0)
        new = phone(s.other_operator, self.round, s.index, 1)
        m = s.messengers[0]
        user = self._user(s, m)
        created = await asyncio.gather(
            self.create(s.operator, old, self._contract(s, 0)),
            self.create(s.other_operator, new, self._contract(s, 1)),
        )
        if not all(created):
            return
        if await self.identify(m, user, old) is None:
            return
        await self.identify(m, user, new, change=True)
        await asyncio.sleep(s.pause)
        await self.end_contract(s.operator, old)
        await self.access(m, user)

    async def keep(self, s: Scenario) -> None:
        """Identify and keep the contract: the identification must survive every fault."""
        number = phone(s.operator, self.round, s.index, 0)
        if not await self.create(s.operator, number, self._contract(s, 0)):
            return
        await asyncio.gather(*(self.identify(m, self._user(s, m), number) for m in s.messengers))
