"""The notices feature's values: a termination notice from the notifier and its result."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from services.messenger_gateway.identification.model import Reason

# --- notices from the notifier ---------------------------------------------------------------


class TerminationKind(StrEnum):
    CONTRACT_ENDED = "CONTRACT_ENDED"
    PORTED_OUT = "PORTED_OUT"

    @property
    def revocation_reason(self) -> Reason:
        """Why an identification on the ended contract stops letting its user send."""
        return (
            Reason.PORTED_OUT if self is TerminationKind.PORTED_OUT else Reason.CONTRACT_TERMINATED
        )


@dataclass(frozen=True, slots=True)
class TerminationNotice:
    seq: int
    event_id: str
    operator_id: str
    messenger_id: str
    identification_code: str = field(repr=False)
    kind: TerminationKind
    trace_id: str = ""  # the trace id of the operator's call that ended the contract

    @property
    def revocation_reason(self) -> Reason:
        return self.kind.revocation_reason


@dataclass(frozen=True, slots=True)
class NoticeResult:
    applied: bool  # False: the event id was already in the inbox
    revoked: int  # identifications revoked by it
    cursor: int  # the persisted cursor afterwards
