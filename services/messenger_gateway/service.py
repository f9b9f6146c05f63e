"""The gateway's use cases behind one face: what the servicers, the notice consumer and the
composition root (main.py) call.

Each job is its own module: identification/service.py (start, confirm), identification/reads.py,
identification/verifier.py (the background verification: tasks, leases, watchdog, hints),
notices/service.py (termination notices), routing/service.py (routing and the ported-numbers
import). GatewayService builds them over the same ports and delegates.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Sequence

from prometheus_client.metrics_core import Metric

from services.common.lease import Fence
from services.common.timeutil import Clock, SystemClock
from services.messenger_gateway.identification.codes import CodeHasher
from services.messenger_gateway.identification.model import (
    Access,
    Identification,
    ReassignmentCheck,
)
from services.messenger_gateway.identification.ports import (
    GatewayStore,
    NumberRouter,
    OperatorDirectory,
    PolicyFollower,
    SmsSender,
)
from services.messenger_gateway.identification.reads import IdentificationReads
from services.messenger_gateway.identification.service import IdentificationService
from services.messenger_gateway.identification.settings import GatewaySettings
from services.messenger_gateway.identification.verifier import Verifier
from services.messenger_gateway.notices.model import NoticeResult, TerminationNotice
from services.messenger_gateway.notices.service import NoticeService
from services.messenger_gateway.routing.model import ImportOutcome
from services.messenger_gateway.routing.service import PortedBatch, ResolvedRoute, RoutingService

__all__ = ["GatewayService", "GatewaySettings", "PortedBatch", "ResolvedRoute"]


class GatewayService:
    def __init__(
        self,
        settings: GatewaySettings,
        *,
        store: GatewayStore,
        router: NumberRouter,
        sms: SmsSender,
        operators: OperatorDirectory,
        clock: Clock | None = None,
        code_hasher: CodeHasher,
        policy: PolicyFollower | None = None,
    ) -> None:
        """policy: the delivery policy's index, told each identification change committed
        here (from the writing transaction's result) and caught up after revocations."""
        clock = clock or SystemClock()
        self.settings = settings
        self.verifier = Verifier(
            settings, store=store, operators=operators, clock=clock, listener=policy
        )
        self.identifications = IdentificationService(
            settings,
            store=store,
            router=router,
            sms=sms,
            operators=operators,
            verifier=self.verifier,
            code_hasher=code_hasher,
            clock=clock,
            listener=policy,
        )
        self.reads = IdentificationReads(store=store, operators=operators)
        self.notices = NoticeService(
            settings.messenger_id, store=store, clock=clock, refresh=policy
        )
        self.routing = RoutingService(store=store, router=router, operators=operators, clock=clock)

    @property
    def messenger_id(self) -> str:
        return self.settings.messenger_id

    # --- identification ----------------------------------------------------------------------

    async def start_identification(
        self, user_id: str, phone_number: str, *, idempotency_key: str = ""
    ) -> Identification:
        return await self.identifications.start_identification(
            user_id, phone_number, idempotency_key=idempotency_key
        )

    async def change_phone_number(
        self, user_id: str, phone_number: str
    ) -> tuple[Identification, Identification]:
        return await self.identifications.change_phone_number(user_id, phone_number)

    async def confirm_possession(
        self, identification_id: str, code: str, *, wait: float
    ) -> Identification:
        return await self.identifications.confirm_possession(identification_id, code, wait=wait)

    async def get_identification(self, user_id: str) -> Identification:
        return await self.reads.get_identification(user_id)

    async def check_access(self, user_id: str) -> Access:
        return await self.reads.check_access(user_id)

    async def check_number_reassigned(
        self, user_id: str, *, time_limit: float = 10.0
    ) -> ReassignmentCheck:
        return await self.reads.check_number_reassigned(user_id, time_limit=time_limit)

    # --- the verifier ------------------------------------------------------------------------

    async def resume_pending(self) -> tuple[int, int]:
        return await self.verifier.resume_pending()

    async def keep_verifications(self) -> tuple[int, int]:
        return await self.verifier.keep_verifications()

    async def expire_overdue(self, *, on: str = "watchdog") -> int:
        return await self.verifier.expire_overdue(on=on)

    async def run_watchdog(self, interval: float) -> None:
        await self.verifier.run_watchdog(interval)

    async def verification_metrics(self) -> list[Metric]:
        return await self.verifier.verification_metrics()

    async def close(self) -> None:
        await self.verifier.close()

    # --- routing -----------------------------------------------------------------------------

    async def resolve_operator(self, phone_number: str) -> ResolvedRoute:
        return await self.routing.resolve_operator(phone_number)

    async def import_ported_numbers(self, batches: AsyncIterable[PortedBatch]) -> ImportOutcome:
        return await self.routing.import_ported_numbers(batches)

    # --- notices (notices.NoticeHandler) -----------------------------------------------------

    async def notice_cursor(self) -> int:
        return await self.notices.notice_cursor()

    async def apply_notice(self, notice: TerminationNotice) -> NoticeResult:
        return await self.notices.apply_notice(notice)

    async def apply_notices(
        self, notices: Sequence[TerminationNotice], *, fence: Fence | None = None
    ) -> list[NoticeResult]:
        return await self.notices.apply_notices(notices, fence=fence)
