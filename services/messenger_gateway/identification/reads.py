"""The identification reads: the user's current identification, "may this user send?", and
"has the number changed hands since the identification?" (asked of the operator)."""

from __future__ import annotations

from services.common.context import log_with_rpc
from services.common.errors import quote
from services.common.phone import mask
from services.messenger_gateway.identification.model import (
    Access,
    AgreementMissing,
    Identification,
    IdentificationNotFound,
    NeverIdentified,
    OperatorRefused,
    OperatorUnavailable,
    OperatorUnreachable,
    ReassignmentCheck,
    State,
    decide_access,
    validate_user_id,
)
from services.messenger_gateway.identification.ports import GatewayStore, OperatorDirectory


class IdentificationReads:
    def __init__(self, *, store: GatewayStore, operators: OperatorDirectory) -> None:
        self._store = store
        self._operators = operators

    async def get_identification(self, user_id: str) -> Identification:
        validate_user_id(user_id)
        current = await self._store.current(user_id)
        if current is None:
            raise IdentificationNotFound(
                f"user {quote(user_id)} has no identification: start one with StartIdentification"
            )
        return current

    async def check_access(self, user_id: str) -> Access:
        validate_user_id(user_id)
        return decide_access(user_id, await self._store.current(user_id))

    async def check_number_reassigned(
        self, user_id: str, *, time_limit: float = 10.0
    ) -> ReassignmentCheck:
        """Ask the operator that identified the user's current identification whether the
        number changed hands after the identification (for dormant accounts)."""
        validate_user_id(user_id)
        current = await self._store.current(user_id)
        if current is None:
            raise IdentificationNotFound(
                f"user {quote(user_id)} has no identification: start one with StartIdentification"
            )
        since = current.identified_at
        if current.state not in (State.IDENTIFIED, State.REVOKED) or since is None:
            raise NeverIdentified(
                f"user {quote(user_id)}'s current identification {current.identification_id} is "
                f"{current.state} and was never IDENTIFIED: there is no identification to ask "
                "about; finish identifying the user first"
            )
        operator_id = current.operator_id
        if not self._operators.knows(operator_id):
            raise OperatorUnreachable(
                f"operator {operator_id!r}, which identified user {quote(user_id)}, is not "
                "configured at this gateway (IDMESH_OPERATORS): it cannot be asked"
            )
        try:
            answer = await self._operators.check_reassigned(
                operator_id, phone_number=current.phone_number, since=since, time_limit=time_limit
            )
        except OperatorUnavailable as exc:
            raise OperatorUnreachable(
                f"operator {operator_id} could not be asked whether {mask(current.phone_number)} "
                f"changed hands ({exc}): try again later"
            ) from None
        except OperatorRefused:
            raise AgreementMissing(
                f"operator {operator_id} refused: it has no active identification agreement "
                "with this messenger"
            ) from None
        log_with_rpc(
            user_id=user_id,
            operator_id=operator_id,
            phone=mask(current.phone_number),
            since=since.isoformat(),
            reassignment=answer,
        )
        return ReassignmentCheck(answer, since, operator_id, current.phone_number)
