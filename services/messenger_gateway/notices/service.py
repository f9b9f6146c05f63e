"""Notice use cases: termination notices from the notifier applied to identifications."""

from __future__ import annotations

import time
from collections.abc import Sequence

from services.common import tracing
from services.common.availability import log_failure
from services.common.lease import Fence
from services.common.logging import get_logger
from services.common.timeutil import Clock
from services.messenger_gateway.identification import transactions
from services.messenger_gateway.identification.metrics import (
    NOTICES_APPLIED,
    NOTICES_DUPLICATE,
    REVOKED_BY_REASON,
)
from services.messenger_gateway.identification.ports import GatewayStore, PolicyRefresh
from services.messenger_gateway.notices.model import NoticeResult, TerminationNotice

log = get_logger("idmesh.gateway")


class NoticeService:
    """The NoticeConsumer's handler (notices.NoticeHandler)."""

    def __init__(
        self,
        messenger_id: str,
        *,
        store: GatewayStore,
        clock: Clock,
        refresh: PolicyRefresh | None = None,
    ) -> None:
        """refresh: awaited after notices revoked identifications (the policy index catches
        up from the change log: a revocation may concern many users)."""
        self.messenger_id = messenger_id
        self._store = store
        self._clock = clock
        self._refresh = refresh

    async def notice_cursor(self) -> int:
        return await self._store.notice_cursor(self.messenger_id)

    async def apply_notice(self, notice: TerminationNotice) -> NoticeResult:
        """apply_notices of one notice."""
        [result] = await self.apply_notices([notice])
        return result

    async def apply_notices(
        self, notices: Sequence[TerminationNotice], *, fence: Fence | None = None
    ) -> list[NoticeResult]:
        """Apply a stream message's notices in order, in one transaction, each once (the inbox
        keeps event ids, so a repeat, even within the batch, changes nothing): revoke the
        IDENTIFIED identifications with its operator and identification code; advance the
        cursor. With fence (the consumer's lease), the same transaction checks that the lease
        is still this consumer's: LeaseFenced, and nothing applied, when another replica has
        taken it. One log line per batch at info (counts, seqs, event and trace ids), one per
        notice at debug."""
        batch: list[tuple[TerminationNotice, bool]] = []
        for notice in notices:
            ours = notice.messenger_id == self.messenger_id
            if not ours:
                log.error(
                    "notice.other_messenger",
                    seq=notice.seq,
                    event_id=notice.event_id,
                    notice_messenger_id=notice.messenger_id,
                )
            batch.append((notice, ours))
        if not batch:
            return []
        started = time.time_ns()
        results = await transactions.apply_notices(
            self._store, self.messenger_id, batch, now=self._clock.now(), fence=fence
        )
        applied = revoked = 0
        for notice, result in zip(notices, results, strict=True):
            tracing.record(
                "notice.apply", notice.trace_id, started, seq=notice.seq, revoked=result.revoked
            )
            applied += result.applied
            if result.revoked:
                revoked += result.revoked
                REVOKED_BY_REASON[notice.revocation_reason].inc(result.revoked)
            log.debug(  # a no-op unless the level is debug (a filtering logger)
                "notice.applied" if result.applied else "notice.duplicate",
                seq=notice.seq,
                event_id=notice.event_id,
                trace_id=notice.trace_id,
                operator_id=notice.operator_id,
                kind=notice.kind,
                revoked=result.revoked,
            )
        NOTICES_APPLIED.inc(applied)
        NOTICES_DUPLICATE.inc(len(results) - applied)
        if revoked:
            await self._refreshed()
        log.info(
            "notices.applied",
            count=len(results),
            applied=applied,
            duplicates=len(results) - applied,
            revoked=revoked,
            first_seq=notices[0].seq,
            last_seq=notices[-1].seq,
            cursor=results[-1].cursor,
            event_ids=[notice.event_id for notice in notices],
            trace_ids=list(dict.fromkeys(n.trace_id for n in notices if n.trace_id)),
        )
        return results

    async def _refreshed(self) -> None:
        if self._refresh is None:
            return
        try:
            await self._refresh.catch_up()
        except Exception as exc:  # committed already; the policy's tailer catches up on its own
            log_failure(log, "notices.policy_refresh_failed", exc)
