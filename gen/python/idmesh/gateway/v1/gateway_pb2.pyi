import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from idmesh.common.v1 import bulk_pb2 as _bulk_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class IdentificationState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IDENTIFICATION_STATE_UNSPECIFIED: _ClassVar[IdentificationState]
    IDENTIFICATION_STATE_AWAITING_CODE: _ClassVar[IdentificationState]
    IDENTIFICATION_STATE_VERIFYING: _ClassVar[IdentificationState]
    IDENTIFICATION_STATE_IDENTIFIED: _ClassVar[IdentificationState]
    IDENTIFICATION_STATE_NOT_COMPLETED: _ClassVar[IdentificationState]
    IDENTIFICATION_STATE_REVOKED: _ClassVar[IdentificationState]

class Reason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REASON_UNSPECIFIED: _ClassVar[Reason]
    REASON_NO_SUBSCRIBER: _ClassVar[Reason]
    REASON_OPERATOR_TIMEOUT: _ClassVar[Reason]
    REASON_NO_OPERATOR: _ClassVar[Reason]
    REASON_AGREEMENT_REFUSED: _ClassVar[Reason]
    REASON_CODE_EXPIRED: _ClassVar[Reason]
    REASON_TOO_MANY_ATTEMPTS: _ClassVar[Reason]
    REASON_CONTRACT_TERMINATED: _ClassVar[Reason]
    REASON_PORTED_OUT: _ClassVar[Reason]
    REASON_NOT_IDENTIFIED: _ClassVar[Reason]
    REASON_NUMBER_CHANGED: _ClassVar[Reason]

class NumberReassignment(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NUMBER_REASSIGNMENT_UNSPECIFIED: _ClassVar[NumberReassignment]
    NUMBER_REASSIGNMENT_REASSIGNED: _ClassVar[NumberReassignment]
    NUMBER_REASSIGNMENT_NOT_REASSIGNED: _ClassVar[NumberReassignment]
    NUMBER_REASSIGNMENT_NO_DATA: _ClassVar[NumberReassignment]

class RouteSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROUTE_SOURCE_UNSPECIFIED: _ClassVar[RouteSource]
    ROUTE_SOURCE_PORTED_NUMBERS: _ClassVar[RouteSource]
    ROUTE_SOURCE_NUMBERING_PLAN: _ClassVar[RouteSource]
    ROUTE_SOURCE_CARRIER_DATA: _ClassVar[RouteSource]
    ROUTE_SOURCE_OPERATOR_HINT: _ClassVar[RouteSource]

class MessageKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MESSAGE_KIND_UNSPECIFIED: _ClassVar[MessageKind]
    MESSAGE_KIND_PERSONAL: _ClassVar[MessageKind]
    MESSAGE_KIND_AUTOMATED: _ClassVar[MessageKind]
    MESSAGE_KIND_STATE_MAILING: _ClassVar[MessageKind]

class DeliveryReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DELIVERY_REASON_UNSPECIFIED: _ClassVar[DeliveryReason]
    DELIVERY_REASON_ALLOWED: _ClassVar[DeliveryReason]
    DELIVERY_REASON_SENDER_NOT_IDENTIFIED: _ClassVar[DeliveryReason]
    DELIVERY_REASON_SENDER_RESTRICTED: _ClassVar[DeliveryReason]
    DELIVERY_REASON_RECIPIENT_UNKNOWN: _ClassVar[DeliveryReason]
    DELIVERY_REASON_RECIPIENT_REFUSED_SENDER: _ClassVar[DeliveryReason]
    DELIVERY_REASON_NO_AUTOMATED_CONSENT: _ClassVar[DeliveryReason]
    DELIVERY_REASON_SENDER_NOT_ACCEPTED: _ClassVar[DeliveryReason]

class SenderRule(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SENDER_RULE_UNSPECIFIED: _ClassVar[SenderRule]
    SENDER_RULE_ACCEPTED: _ClassVar[SenderRule]
    SENDER_RULE_REFUSED: _ClassVar[SenderRule]
    SENDER_RULE_NONE: _ClassVar[SenderRule]

class UnacceptedSenderPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    UNACCEPTED_SENDER_POLICY_UNSPECIFIED: _ClassVar[UnacceptedSenderPolicy]
    UNACCEPTED_SENDER_POLICY_ALLOW: _ClassVar[UnacceptedSenderPolicy]
    UNACCEPTED_SENDER_POLICY_REFUSE: _ClassVar[UnacceptedSenderPolicy]
    UNACCEPTED_SENDER_POLICY_DEFAULT: _ClassVar[UnacceptedSenderPolicy]

class AutomatedConsentState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AUTOMATED_CONSENT_STATE_UNSPECIFIED: _ClassVar[AutomatedConsentState]
    AUTOMATED_CONSENT_STATE_GRANTED: _ClassVar[AutomatedConsentState]
    AUTOMATED_CONSENT_STATE_REVOKED: _ClassVar[AutomatedConsentState]

class RestrictionScope(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RESTRICTION_SCOPE_UNSPECIFIED: _ClassVar[RestrictionScope]
    RESTRICTION_SCOPE_ALL_MESSAGES: _ClassVar[RestrictionScope]
    RESTRICTION_SCOPE_AUTOMATED: _ClassVar[RestrictionScope]

class RestrictionOrderState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RESTRICTION_ORDER_STATE_UNSPECIFIED: _ClassVar[RestrictionOrderState]
    RESTRICTION_ORDER_STATE_RECEIVED: _ClassVar[RestrictionOrderState]
    RESTRICTION_ORDER_STATE_IN_FORCE: _ClassVar[RestrictionOrderState]
    RESTRICTION_ORDER_STATE_LIFTED: _ClassVar[RestrictionOrderState]

class PolicyChangeKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    POLICY_CHANGE_KIND_UNSPECIFIED: _ClassVar[PolicyChangeKind]
    POLICY_CHANGE_KIND_IDENTIFICATION: _ClassVar[PolicyChangeKind]
    POLICY_CHANGE_KIND_SENDER_RULE: _ClassVar[PolicyChangeKind]
    POLICY_CHANGE_KIND_UNACCEPTED_POLICY: _ClassVar[PolicyChangeKind]
    POLICY_CHANGE_KIND_AUTOMATED_CONSENT: _ClassVar[PolicyChangeKind]
    POLICY_CHANGE_KIND_RESTRICTION_ORDER: _ClassVar[PolicyChangeKind]
IDENTIFICATION_STATE_UNSPECIFIED: IdentificationState
IDENTIFICATION_STATE_AWAITING_CODE: IdentificationState
IDENTIFICATION_STATE_VERIFYING: IdentificationState
IDENTIFICATION_STATE_IDENTIFIED: IdentificationState
IDENTIFICATION_STATE_NOT_COMPLETED: IdentificationState
IDENTIFICATION_STATE_REVOKED: IdentificationState
REASON_UNSPECIFIED: Reason
REASON_NO_SUBSCRIBER: Reason
REASON_OPERATOR_TIMEOUT: Reason
REASON_NO_OPERATOR: Reason
REASON_AGREEMENT_REFUSED: Reason
REASON_CODE_EXPIRED: Reason
REASON_TOO_MANY_ATTEMPTS: Reason
REASON_CONTRACT_TERMINATED: Reason
REASON_PORTED_OUT: Reason
REASON_NOT_IDENTIFIED: Reason
REASON_NUMBER_CHANGED: Reason
NUMBER_REASSIGNMENT_UNSPECIFIED: NumberReassignment
NUMBER_REASSIGNMENT_REASSIGNED: NumberReassignment
NUMBER_REASSIGNMENT_NOT_REASSIGNED: NumberReassignment
NUMBER_REASSIGNMENT_NO_DATA: NumberReassignment
ROUTE_SOURCE_UNSPECIFIED: RouteSource
ROUTE_SOURCE_PORTED_NUMBERS: RouteSource
ROUTE_SOURCE_NUMBERING_PLAN: RouteSource
ROUTE_SOURCE_CARRIER_DATA: RouteSource
ROUTE_SOURCE_OPERATOR_HINT: RouteSource
MESSAGE_KIND_UNSPECIFIED: MessageKind
MESSAGE_KIND_PERSONAL: MessageKind
MESSAGE_KIND_AUTOMATED: MessageKind
MESSAGE_KIND_STATE_MAILING: MessageKind
DELIVERY_REASON_UNSPECIFIED: DeliveryReason
DELIVERY_REASON_ALLOWED: DeliveryReason
DELIVERY_REASON_SENDER_NOT_IDENTIFIED: DeliveryReason
DELIVERY_REASON_SENDER_RESTRICTED: DeliveryReason
DELIVERY_REASON_RECIPIENT_UNKNOWN: DeliveryReason
DELIVERY_REASON_RECIPIENT_REFUSED_SENDER: DeliveryReason
DELIVERY_REASON_NO_AUTOMATED_CONSENT: DeliveryReason
DELIVERY_REASON_SENDER_NOT_ACCEPTED: DeliveryReason
SENDER_RULE_UNSPECIFIED: SenderRule
SENDER_RULE_ACCEPTED: SenderRule
SENDER_RULE_REFUSED: SenderRule
SENDER_RULE_NONE: SenderRule
UNACCEPTED_SENDER_POLICY_UNSPECIFIED: UnacceptedSenderPolicy
UNACCEPTED_SENDER_POLICY_ALLOW: UnacceptedSenderPolicy
UNACCEPTED_SENDER_POLICY_REFUSE: UnacceptedSenderPolicy
UNACCEPTED_SENDER_POLICY_DEFAULT: UnacceptedSenderPolicy
AUTOMATED_CONSENT_STATE_UNSPECIFIED: AutomatedConsentState
AUTOMATED_CONSENT_STATE_GRANTED: AutomatedConsentState
AUTOMATED_CONSENT_STATE_REVOKED: AutomatedConsentState
RESTRICTION_SCOPE_UNSPECIFIED: RestrictionScope
RESTRICTION_SCOPE_ALL_MESSAGES: RestrictionScope
RESTRICTION_SCOPE_AUTOMATED: RestrictionScope
RESTRICTION_ORDER_STATE_UNSPECIFIED: RestrictionOrderState
RESTRICTION_ORDER_STATE_RECEIVED: RestrictionOrderState
RESTRICTION_ORDER_STATE_IN_FORCE: RestrictionOrderState
RESTRICTION_ORDER_STATE_LIFTED: RestrictionOrderState
POLICY_CHANGE_KIND_UNSPECIFIED: PolicyChangeKind
POLICY_CHANGE_KIND_IDENTIFICATION: PolicyChangeKind
POLICY_CHANGE_KIND_SENDER_RULE: PolicyChangeKind
POLICY_CHANGE_KIND_UNACCEPTED_POLICY: PolicyChangeKind
POLICY_CHANGE_KIND_AUTOMATED_CONSENT: PolicyChangeKind
POLICY_CHANGE_KIND_RESTRICTION_ORDER: PolicyChangeKind

class Identification(_message.Message):
    __slots__ = ("identification_id", "user_id", "phone_number", "state", "reason", "operator_id", "started_at", "code_expires_at", "verification_deadline", "completed_at", "attempts_left")
    IDENTIFICATION_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PHONE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_ID_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    CODE_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    VERIFICATION_DEADLINE_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_AT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_LEFT_FIELD_NUMBER: _ClassVar[int]
    identification_id: str
    user_id: str
    phone_number: str
    state: IdentificationState
    reason: Reason
    operator_id: str
    started_at: _timestamp_pb2.Timestamp
    code_expires_at: _timestamp_pb2.Timestamp
    verification_deadline: _timestamp_pb2.Timestamp
    completed_at: _timestamp_pb2.Timestamp
    attempts_left: int
    def __init__(self, identification_id: _Optional[str] = ..., user_id: _Optional[str] = ..., phone_number: _Optional[str] = ..., state: _Optional[_Union[IdentificationState, str]] = ..., reason: _Optional[_Union[Reason, str]] = ..., operator_id: _Optional[str] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., code_expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., verification_deadline: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., completed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., attempts_left: _Optional[int] = ...) -> None: ...

class StartIdentificationRequest(_message.Message):
    __slots__ = ("user_id", "phone_number", "idempotency_key")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PHONE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    phone_number: str
    idempotency_key: str
    def __init__(self, user_id: _Optional[str] = ..., phone_number: _Optional[str] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class StartIdentificationResponse(_message.Message):
    __slots__ = ("identification",)
    IDENTIFICATION_FIELD_NUMBER: _ClassVar[int]
    identification: Identification
    def __init__(self, identification: _Optional[_Union[Identification, _Mapping]] = ...) -> None: ...

class ConfirmPossessionRequest(_message.Message):
    __slots__ = ("identification_id", "code", "max_wait")
    IDENTIFICATION_ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MAX_WAIT_FIELD_NUMBER: _ClassVar[int]
    identification_id: str
    code: str
    max_wait: _duration_pb2.Duration
    def __init__(self, identification_id: _Optional[str] = ..., code: _Optional[str] = ..., max_wait: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class ConfirmPossessionResponse(_message.Message):
    __slots__ = ("identification",)
    IDENTIFICATION_FIELD_NUMBER: _ClassVar[int]
    identification: Identification
    def __init__(self, identification: _Optional[_Union[Identification, _Mapping]] = ...) -> None: ...

class GetIdentificationRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class GetIdentificationResponse(_message.Message):
    __slots__ = ("identification",)
    IDENTIFICATION_FIELD_NUMBER: _ClassVar[int]
    identification: Identification
    def __init__(self, identification: _Optional[_Union[Identification, _Mapping]] = ...) -> None: ...

class CheckAccessRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class CheckAccessResponse(_message.Message):
    __slots__ = ("allowed", "reason", "message", "state")
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    allowed: bool
    reason: Reason
    message: str
    state: IdentificationState
    def __init__(self, allowed: _Optional[bool] = ..., reason: _Optional[_Union[Reason, str]] = ..., message: _Optional[str] = ..., state: _Optional[_Union[IdentificationState, str]] = ...) -> None: ...

class ChangePhoneNumberRequest(_message.Message):
    __slots__ = ("user_id", "phone_number")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PHONE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    phone_number: str
    def __init__(self, user_id: _Optional[str] = ..., phone_number: _Optional[str] = ...) -> None: ...

class ChangePhoneNumberResponse(_message.Message):
    __slots__ = ("identification", "previous")
    IDENTIFICATION_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_FIELD_NUMBER: _ClassVar[int]
    identification: Identification
    previous: Identification
    def __init__(self, identification: _Optional[_Union[Identification, _Mapping]] = ..., previous: _Optional[_Union[Identification, _Mapping]] = ...) -> None: ...

class CheckNumberReassignedRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class CheckNumberReassignedResponse(_message.Message):
    __slots__ = ("reassignment", "since", "operator_id", "phone_number")
    REASSIGNMENT_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_ID_FIELD_NUMBER: _ClassVar[int]
    PHONE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    reassignment: NumberReassignment
    since: _timestamp_pb2.Timestamp
    operator_id: str
    phone_number: str
    def __init__(self, reassignment: _Optional[_Union[NumberReassignment, str]] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., operator_id: _Optional[str] = ..., phone_number: _Optional[str] = ...) -> None: ...

class PortedNumber(_message.Message):
    __slots__ = ("line", "phone_number", "recipient_operator_id", "ported_at")
    LINE_FIELD_NUMBER: _ClassVar[int]
    PHONE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_OPERATOR_ID_FIELD_NUMBER: _ClassVar[int]
    PORTED_AT_FIELD_NUMBER: _ClassVar[int]
    line: int
    phone_number: str
    recipient_operator_id: str
    ported_at: _timestamp_pb2.Timestamp
    def __init__(self, line: _Optional[int] = ..., phone_number: _Optional[str] = ..., recipient_operator_id: _Optional[str] = ..., ported_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ImportPortedNumbersRequest(_message.Message):
    __slots__ = ("all_or_nothing", "mode", "rows")
    ALL_OR_NOTHING_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    all_or_nothing: bool
    mode: _bulk_pb2.ImportMode
    rows: _containers.RepeatedCompositeFieldContainer[PortedNumber]
    def __init__(self, all_or_nothing: _Optional[bool] = ..., mode: _Optional[_Union[_bulk_pb2.ImportMode, str]] = ..., rows: _Optional[_Iterable[_Union[PortedNumber, _Mapping]]] = ...) -> None: ...

class RowError(_message.Message):
    __slots__ = ("line", "message")
    LINE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    line: int
    message: str
    def __init__(self, line: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class ImportPortedNumbersResponse(_message.Message):
    __slots__ = ("imported", "rejected", "errors", "committed", "unchanged")
    IMPORTED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_FIELD_NUMBER: _ClassVar[int]
    UNCHANGED_FIELD_NUMBER: _ClassVar[int]
    imported: int
    rejected: int
    errors: _containers.RepeatedCompositeFieldContainer[RowError]
    committed: bool
    unchanged: int
    def __init__(self, imported: _Optional[int] = ..., rejected: _Optional[int] = ..., errors: _Optional[_Iterable[_Union[RowError, _Mapping]]] = ..., committed: _Optional[bool] = ..., unchanged: _Optional[int] = ...) -> None: ...

class ResolveOperatorRequest(_message.Message):
    __slots__ = ("phone_number",)
    PHONE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    phone_number: str
    def __init__(self, phone_number: _Optional[str] = ...) -> None: ...

class ResolveOperatorResponse(_message.Message):
    __slots__ = ("phone_number", "operator_id", "source", "configured")
    PHONE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    CONFIGURED_FIELD_NUMBER: _ClassVar[int]
    phone_number: str
    operator_id: str
    source: RouteSource
    configured: bool
    def __init__(self, phone_number: _Optional[str] = ..., operator_id: _Optional[str] = ..., source: _Optional[_Union[RouteSource, str]] = ..., configured: _Optional[bool] = ...) -> None: ...

class SetSenderRuleRequest(_message.Message):
    __slots__ = ("user_id", "sender_id", "rule")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    SENDER_ID_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    sender_id: str
    rule: SenderRule
    def __init__(self, user_id: _Optional[str] = ..., sender_id: _Optional[str] = ..., rule: _Optional[_Union[SenderRule, str]] = ...) -> None: ...

class SetSenderRuleResponse(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: int
    def __init__(self, version: _Optional[int] = ...) -> None: ...

class SetUnacceptedSenderPolicyRequest(_message.Message):
    __slots__ = ("user_id", "policy")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    policy: UnacceptedSenderPolicy
    def __init__(self, user_id: _Optional[str] = ..., policy: _Optional[_Union[UnacceptedSenderPolicy, str]] = ...) -> None: ...

class SetUnacceptedSenderPolicyResponse(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: int
    def __init__(self, version: _Optional[int] = ...) -> None: ...

class SetAutomatedConsentRequest(_message.Message):
    __slots__ = ("user_id", "sender_id", "consent")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    SENDER_ID_FIELD_NUMBER: _ClassVar[int]
    CONSENT_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    sender_id: str
    consent: AutomatedConsentState
    def __init__(self, user_id: _Optional[str] = ..., sender_id: _Optional[str] = ..., consent: _Optional[_Union[AutomatedConsentState, str]] = ...) -> None: ...

class AutomatedConsent(_message.Message):
    __slots__ = ("sender_id", "consent", "granted_at", "revoked_at")
    SENDER_ID_FIELD_NUMBER: _ClassVar[int]
    CONSENT_FIELD_NUMBER: _ClassVar[int]
    GRANTED_AT_FIELD_NUMBER: _ClassVar[int]
    REVOKED_AT_FIELD_NUMBER: _ClassVar[int]
    sender_id: str
    consent: AutomatedConsentState
    granted_at: _timestamp_pb2.Timestamp
    revoked_at: _timestamp_pb2.Timestamp
    def __init__(self, sender_id: _Optional[str] = ..., consent: _Optional[_Union[AutomatedConsentState, str]] = ..., granted_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., revoked_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SetAutomatedConsentResponse(_message.Message):
    __slots__ = ("consent", "version")
    CONSENT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    consent: AutomatedConsent
    version: int
    def __init__(self, consent: _Optional[_Union[AutomatedConsent, _Mapping]] = ..., version: _Optional[int] = ...) -> None: ...

class ListPreferencesRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class SenderRuleEntry(_message.Message):
    __slots__ = ("sender_id", "rule", "updated_at")
    SENDER_ID_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    sender_id: str
    rule: SenderRule
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, sender_id: _Optional[str] = ..., rule: _Optional[_Union[SenderRule, str]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListPreferencesResponse(_message.Message):
    __slots__ = ("user_id", "unaccepted_policy", "effective_unaccepted_policy", "sender_rules", "automated_consents")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    UNACCEPTED_POLICY_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_UNACCEPTED_POLICY_FIELD_NUMBER: _ClassVar[int]
    SENDER_RULES_FIELD_NUMBER: _ClassVar[int]
    AUTOMATED_CONSENTS_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    unaccepted_policy: UnacceptedSenderPolicy
    effective_unaccepted_policy: UnacceptedSenderPolicy
    sender_rules: _containers.RepeatedCompositeFieldContainer[SenderRuleEntry]
    automated_consents: _containers.RepeatedCompositeFieldContainer[AutomatedConsent]
    def __init__(self, user_id: _Optional[str] = ..., unaccepted_policy: _Optional[_Union[UnacceptedSenderPolicy, str]] = ..., effective_unaccepted_policy: _Optional[_Union[UnacceptedSenderPolicy, str]] = ..., sender_rules: _Optional[_Iterable[_Union[SenderRuleEntry, _Mapping]]] = ..., automated_consents: _Optional[_Iterable[_Union[AutomatedConsent, _Mapping]]] = ...) -> None: ...

class CheckDeliveryRequest(_message.Message):
    __slots__ = ("sender_id", "recipient_id", "kind", "min_version")
    SENDER_ID_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MIN_VERSION_FIELD_NUMBER: _ClassVar[int]
    sender_id: str
    recipient_id: str
    kind: MessageKind
    min_version: int
    def __init__(self, sender_id: _Optional[str] = ..., recipient_id: _Optional[str] = ..., kind: _Optional[_Union[MessageKind, str]] = ..., min_version: _Optional[int] = ...) -> None: ...

class CheckDeliveryResponse(_message.Message):
    __slots__ = ("allowed", "reason", "message", "version")
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    allowed: bool
    reason: DeliveryReason
    message: str
    version: int
    def __init__(self, allowed: _Optional[bool] = ..., reason: _Optional[_Union[DeliveryReason, str]] = ..., message: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class DeliveryPair(_message.Message):
    __slots__ = ("sender_id", "recipient_id", "kind")
    SENDER_ID_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    sender_id: str
    recipient_id: str
    kind: MessageKind
    def __init__(self, sender_id: _Optional[str] = ..., recipient_id: _Optional[str] = ..., kind: _Optional[_Union[MessageKind, str]] = ...) -> None: ...

class CheckDeliveryBatchRequest(_message.Message):
    __slots__ = ("pairs", "min_version")
    PAIRS_FIELD_NUMBER: _ClassVar[int]
    MIN_VERSION_FIELD_NUMBER: _ClassVar[int]
    pairs: _containers.RepeatedCompositeFieldContainer[DeliveryPair]
    min_version: int
    def __init__(self, pairs: _Optional[_Iterable[_Union[DeliveryPair, _Mapping]]] = ..., min_version: _Optional[int] = ...) -> None: ...

class CheckDeliveryBatchResponse(_message.Message):
    __slots__ = ("reasons", "version")
    REASONS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    reasons: _containers.RepeatedScalarFieldContainer[DeliveryReason]
    version: int
    def __init__(self, reasons: _Optional[_Iterable[_Union[DeliveryReason, str]]] = ..., version: _Optional[int] = ...) -> None: ...

class WatchPolicyChangesRequest(_message.Message):
    __slots__ = ("after_version",)
    AFTER_VERSION_FIELD_NUMBER: _ClassVar[int]
    after_version: int
    def __init__(self, after_version: _Optional[int] = ...) -> None: ...

class PolicyChange(_message.Message):
    __slots__ = ("version", "changed_at", "kind", "user_id", "sender_id", "phone_number", "value", "order_id", "scope")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CHANGED_AT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    SENDER_ID_FIELD_NUMBER: _ClassVar[int]
    PHONE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    version: int
    changed_at: _timestamp_pb2.Timestamp
    kind: PolicyChangeKind
    user_id: str
    sender_id: str
    phone_number: str
    value: str
    order_id: str
    scope: str
    def __init__(self, version: _Optional[int] = ..., changed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., kind: _Optional[_Union[PolicyChangeKind, str]] = ..., user_id: _Optional[str] = ..., sender_id: _Optional[str] = ..., phone_number: _Optional[str] = ..., value: _Optional[str] = ..., order_id: _Optional[str] = ..., scope: _Optional[str] = ...) -> None: ...

class WatchPolicyChangesResponse(_message.Message):
    __slots__ = ("changes", "head_version")
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    HEAD_VERSION_FIELD_NUMBER: _ClassVar[int]
    changes: _containers.RepeatedCompositeFieldContainer[PolicyChange]
    head_version: int
    def __init__(self, changes: _Optional[_Iterable[_Union[PolicyChange, _Mapping]]] = ..., head_version: _Optional[int] = ...) -> None: ...

class RestrictionOrder(_message.Message):
    __slots__ = ("order_id", "user_id", "phone_number", "scope", "state", "received_at", "recorded_at", "in_force_at", "lifted_at", "lift_reason")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PHONE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_AT_FIELD_NUMBER: _ClassVar[int]
    RECORDED_AT_FIELD_NUMBER: _ClassVar[int]
    IN_FORCE_AT_FIELD_NUMBER: _ClassVar[int]
    LIFTED_AT_FIELD_NUMBER: _ClassVar[int]
    LIFT_REASON_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    user_id: str
    phone_number: str
    scope: RestrictionScope
    state: RestrictionOrderState
    received_at: _timestamp_pb2.Timestamp
    recorded_at: _timestamp_pb2.Timestamp
    in_force_at: _timestamp_pb2.Timestamp
    lifted_at: _timestamp_pb2.Timestamp
    lift_reason: str
    def __init__(self, order_id: _Optional[str] = ..., user_id: _Optional[str] = ..., phone_number: _Optional[str] = ..., scope: _Optional[_Union[RestrictionScope, str]] = ..., state: _Optional[_Union[RestrictionOrderState, str]] = ..., received_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., recorded_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., in_force_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., lifted_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., lift_reason: _Optional[str] = ...) -> None: ...

class RecordRestrictionOrderRequest(_message.Message):
    __slots__ = ("order_id", "user_id", "phone_number", "scope", "received_at", "hold")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PHONE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_AT_FIELD_NUMBER: _ClassVar[int]
    HOLD_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    user_id: str
    phone_number: str
    scope: RestrictionScope
    received_at: _timestamp_pb2.Timestamp
    hold: bool
    def __init__(self, order_id: _Optional[str] = ..., user_id: _Optional[str] = ..., phone_number: _Optional[str] = ..., scope: _Optional[_Union[RestrictionScope, str]] = ..., received_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., hold: _Optional[bool] = ...) -> None: ...

class RecordRestrictionOrderResponse(_message.Message):
    __slots__ = ("order", "created")
    ORDER_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    order: RestrictionOrder
    created: bool
    def __init__(self, order: _Optional[_Union[RestrictionOrder, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class EnforceRestrictionOrderRequest(_message.Message):
    __slots__ = ("order_id",)
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    def __init__(self, order_id: _Optional[str] = ...) -> None: ...

class EnforceRestrictionOrderResponse(_message.Message):
    __slots__ = ("order",)
    ORDER_FIELD_NUMBER: _ClassVar[int]
    order: RestrictionOrder
    def __init__(self, order: _Optional[_Union[RestrictionOrder, _Mapping]] = ...) -> None: ...

class LiftRestrictionOrderRequest(_message.Message):
    __slots__ = ("order_id", "reason")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    reason: str
    def __init__(self, order_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class LiftRestrictionOrderResponse(_message.Message):
    __slots__ = ("order",)
    ORDER_FIELD_NUMBER: _ClassVar[int]
    order: RestrictionOrder
    def __init__(self, order: _Optional[_Union[RestrictionOrder, _Mapping]] = ...) -> None: ...

class ListRestrictionOrdersRequest(_message.Message):
    __slots__ = ("state", "limit")
    STATE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    state: RestrictionOrderState
    limit: int
    def __init__(self, state: _Optional[_Union[RestrictionOrderState, str]] = ..., limit: _Optional[int] = ...) -> None: ...

class ListRestrictionOrdersResponse(_message.Message):
    __slots__ = ("orders",)
    ORDERS_FIELD_NUMBER: _ClassVar[int]
    orders: _containers.RepeatedCompositeFieldContainer[RestrictionOrder]
    def __init__(self, orders: _Optional[_Iterable[_Union[RestrictionOrder, _Mapping]]] = ...) -> None: ...

class ListRestrictionAuditRequest(_message.Message):
    __slots__ = ("order_id", "limit")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    limit: int
    def __init__(self, order_id: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class RestrictionAuditRecord(_message.Message):
    __slots__ = ("seq", "at", "order_id", "action", "actor", "masked_target", "scope", "state", "note")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    MASKED_TARGET_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    seq: int
    at: _timestamp_pb2.Timestamp
    order_id: str
    action: str
    actor: str
    masked_target: str
    scope: RestrictionScope
    state: RestrictionOrderState
    note: str
    def __init__(self, seq: _Optional[int] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., order_id: _Optional[str] = ..., action: _Optional[str] = ..., actor: _Optional[str] = ..., masked_target: _Optional[str] = ..., scope: _Optional[_Union[RestrictionScope, str]] = ..., state: _Optional[_Union[RestrictionOrderState, str]] = ..., note: _Optional[str] = ...) -> None: ...

class ListRestrictionAuditResponse(_message.Message):
    __slots__ = ("records",)
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[RestrictionAuditRecord]
    def __init__(self, records: _Optional[_Iterable[_Union[RestrictionAuditRecord, _Mapping]]] = ...) -> None: ...
