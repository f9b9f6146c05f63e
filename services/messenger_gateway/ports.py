"""The gateway's store port: what the service layer needs from a store, whatever the engine.

The adapters: store.SqliteGatewayStore (SQLite, one replica) and store_pg.PgGatewayStore
(PostgreSQL, several replicas on one database). Each method that writes is
one transaction, and its guard (the state an identification must still be in, the request id it
must still be verifying under, its window) is part of the write, so that the first of two
racing writers wins and the other changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from services.common.lease import Lease, LeaseStore
from services.messenger_gateway.domain import (
    Identification,
    NoticeResult,
    PortedNumber,
    Reason,
    State,
    TerminationNotice,
)


class GatewayStore(LeaseStore, Protocol):
    """Named leases (acquire_lease, release_lease, lease_of: LeaseStore) hold the notice
    consumer; pending verifications carry a lease of their own (begin_verification,
    claim_verifications, renew_verifications, release_verifications)."""

    # --- reads --------------------------------------------------------------------------------

    async def get(self, identification_id: str) -> Identification | None: ...

    async def current(self, user_id: str) -> Identification | None:
        """The user's latest identification."""
        ...

    async def history(self, user_id: str) -> list[Identification]: ...

    async def verifying_summary(self) -> tuple[int, datetime | None]:
        """(identifications VERIFYING, the earliest verification deadline among them)."""
        ...

    async def notice_cursor(self, messenger_id: str) -> int: ...

    async def inbox_has(self, event_id: str) -> bool: ...

    async def ported_number(self, phone_number: str) -> PortedNumber | None: ...

    async def by_idempotency_key(self, user_id: str, key: str) -> Identification | None:
        """The identification the user started with this idempotency key, if any."""
        ...

    # --- identification transitions -------------------------------------------------------------

    async def replace_current(
        self,
        new: Identification,
        *,
        now: datetime,
        change_number: bool,
        idempotency_key: str | None = None,
    ) -> Identification | None:
        """Insert `new` as the user's current identification, ending the previous one, in one
        transaction; the previous one as it is afterwards, or None. With an idempotency key
        the user already started an identification with: nothing changes, IdempotentReplay."""
        ...

    async def expire_code(self, identification_id: str, now: datetime) -> bool: ...

    async def record_wrong_code(
        self, identification_id: str, now: datetime
    ) -> Identification | None: ...

    async def begin_verification(
        self,
        identification_id: str,
        *,
        verify_key: str,
        deadline: datetime,
        now: datetime,
        lease: Lease,
    ) -> bool:
        """AWAITING_CODE -> VERIFYING, held by lease.holder until lease.expires_at; stored
        before the operator is asked."""
        ...

    async def finish_verification(
        self,
        identification_id: str,
        verify_key: str,
        *,
        state: State,
        reason: Reason,
        now: datetime,
        operator_id: str | None = None,
        identification_code: str | None = None,
        within_window: bool,
    ) -> tuple[State, Reason] | None:
        """VERIFYING -> state, only if still VERIFYING under verify_key (and, with
        within_window, before its deadline); the (state, reason) recorded, None if nothing
        changed."""
        ...

    async def follow_hint(
        self,
        identification_id: str,
        verify_key: str,
        *,
        recipient: str,
        donor: str,
        now: datetime,
    ) -> bool: ...

    async def remember_hint(self, phone_number: str, recipient: str, now: datetime) -> bool: ...

    async def expire_overdue(self, now: datetime) -> list[str]:
        """VERIFYING past its deadline -> NOT_COMPLETED OPERATOR_TIMEOUT; their ids."""
        ...

    # --- verification leases --------------------------------------------------------------------

    async def claim_verifications(
        self, lease: Lease, *, now: datetime, limit: int = 1000
    ) -> list[Identification]:
        """Take for lease.holder, until lease.expires_at, the VERIFYING identifications within
        their window that nobody holds (never held, released, or their lease expired at `now`),
        oldest first, at most `limit`. Two replicas claiming at once never take the same one."""
        ...

    async def renew_verifications(self, lease: Lease, running: Sequence[str]) -> list[str]:
        """Extend every VERIFYING identification lease.holder holds to lease.expires_at; of
        `running` (the ids the holder is verifying), those still VERIFYING that another holder
        has taken (the holder's verification of them must stop)."""
        ...

    async def release_verifications(self, holder: str) -> int:
        """Free the VERIFYING identifications holder holds (shutdown): any replica may take
        them at once. How many."""
        ...

    # --- notices and ported numbers ---------------------------------------------------------------

    async def apply_notices(
        self,
        messenger_id: str,
        notices: Sequence[tuple[TerminationNotice, bool]],
        *,
        now: datetime,
    ) -> list[NoticeResult]:
        """In one transaction, for each (notice, revoke) in order: the event id into the inbox
        (a repeat, also within the batch, changes nothing), with revoke the identifications it
        names revoked; then the cursor advanced to the last seq."""
        ...

    async def stage_ported(
        self, import_id: str, rows: Sequence[tuple[int, PortedNumber]]
    ) -> None: ...

    async def commit_ported(self, import_id: str, now: datetime) -> int: ...

    async def discard_ported(self, import_id: str) -> None: ...
