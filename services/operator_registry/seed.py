"""The seed file (IDMESH_SEED_FILE): messengers and subscribers applied at start, idempotently.

    {"messengers":  [{"messenger_id": "alpha", "display_name": "Alpha Chat"}],
     "subscribers": [{"phone_number": "+79031234567", "contract_id": "BEE-0001",
                      "activated_at": "2024-01-15T00:00:00Z"}]}

display_name and activated_at are optional (the messenger id; now). Applying registers missing
messengers as active (an existing agreement, suspended or not, is left as it is) and creates the
contracts of numbers that never had one (a number with any contract is skipped). The whole file
is checked before anything is applied; a bad file is refused with a SeedError that names the file
and the entry.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from services.common.errors import InvalidInput
from services.common.identity import validate_id
from services.common.phone import mask, parse_mobile
from services.operator_registry.domain import (
    Agreement,
    AgreementState,
    Contract,
    ContractState,
    normalise_display_name,
    validate_contract_id,
)
from services.operator_registry.service import RegistryService, SeedConflict, SeedOutcome


class SeedError(Exception):
    """The seed file cannot be used; the message names the file and the entry."""


@dataclass(frozen=True, slots=True)
class SeedMessenger:
    messenger_id: str
    display_name: str | None


@dataclass(frozen=True, slots=True)
class SeedSubscriber:
    phone_number: str
    contract_id: str
    activated_at: datetime | None


@dataclass(frozen=True, slots=True)
class Seed:
    path: Path
    messengers: tuple[SeedMessenger, ...]
    subscribers: tuple[SeedSubscriber, ...]


_TOP_KEYS = {"messengers", "subscribers"}
_MESSENGER_KEYS = {"messenger_id", "display_name"}
_SUBSCRIBER_KEYS = {"phone_number", "contract_id", "activated_at"}


def load_seed(path: Path) -> Seed:
    """Read and check the whole seed file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SeedError(f"seed file {path}: cannot read it: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SeedError(
            f"seed file {path}: not valid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    if not isinstance(data, dict):
        raise SeedError(f"seed file {path}: expected a JSON object with {sorted(_TOP_KEYS)}")
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise SeedError(
            f"seed file {path}: unknown keys {sorted(unknown)}; expected {sorted(_TOP_KEYS)}"
        )
    messengers = [
        _entry(path, "messengers", i, item, _MESSENGER_KEYS, _messenger)
        for i, item in enumerate(_list(path, data, "messengers"))
    ]
    subscribers = [
        _entry(path, "subscribers", i, item, _SUBSCRIBER_KEYS, _subscriber)
        for i, item in enumerate(_list(path, data, "subscribers"))
    ]
    _no_duplicates(path, "messengers", [m.messenger_id for m in messengers], "messenger_id")
    _no_duplicates(
        path, "subscribers", [s.phone_number for s in subscribers], "phone_number", show=mask
    )
    _no_duplicates(path, "subscribers", [s.contract_id for s in subscribers], "contract_id")
    return Seed(path, tuple(messengers), tuple(subscribers))


async def apply_seed(service: RegistryService, seed: Seed, now: datetime) -> SeedOutcome:
    agreements = [
        Agreement(
            messenger_id=m.messenger_id,
            display_name=m.display_name or m.messenger_id,
            state=AgreementState.ACTIVE,
            updated_at=now,
        )
        for m in seed.messengers
    ]
    contracts = [
        Contract(
            contract_id=s.contract_id,
            phone_number=s.phone_number,
            state=ContractState.ACTIVE,
            activated_at=s.activated_at or now,
        )
        for s in seed.subscribers
    ]
    try:
        return await service.apply_seed(agreements, contracts)
    except SeedConflict as exc:
        index = next(i for i, s in enumerate(seed.subscribers) if s.contract_id in exc.contract_ids)
        raise SeedError(
            f"seed file {seed.path}: subscribers[{index}]: contract_id "
            f"{seed.subscribers[index].contract_id!r} already belongs to another number in the "
            "registry: choose another contract_id"
        ) from None


def _list(path: Path, data: dict[str, Any], key: str) -> list[Any]:
    value = data.get(key, [])
    if not isinstance(value, list):
        raise SeedError(f"seed file {path}: {key!r} must be a list")
    return value


def _entry(path: Path, key: str, index: int, item: Any, allowed: set[str], parse: Any) -> Any:
    where = f"seed file {path}: {key}[{index}]"
    if not isinstance(item, dict):
        raise SeedError(f"{where}: expected an object with {sorted(allowed)}")
    unknown = set(item) - allowed
    if unknown:
        raise SeedError(f"{where}: unknown keys {sorted(unknown)}; expected {sorted(allowed)}")
    try:
        return parse(item)
    except InvalidInput as exc:
        raise SeedError(f"{where}: {exc.message}") from None


def _text(item: dict[str, Any], key: str, *, required: bool) -> str:
    value = item.get(key)
    if value is None:
        if required:
            raise InvalidInput(f"{key} is required")
        return ""
    if not isinstance(value, str):
        raise InvalidInput(f"{key} must be a string")
    return value


def _messenger(item: dict[str, Any]) -> SeedMessenger:
    messenger_id = validate_id(_text(item, "messenger_id", required=True), "messenger_id")
    return SeedMessenger(
        messenger_id, normalise_display_name(_text(item, "display_name", required=False))
    )


def _subscriber(item: dict[str, Any]) -> SeedSubscriber:
    phone = parse_mobile(_text(item, "phone_number", required=True))
    contract_id = validate_contract_id(_text(item, "contract_id", required=True))
    raw_time = _text(item, "activated_at", required=False)
    activated_at = None
    if raw_time:
        try:
            activated_at = datetime.fromisoformat(raw_time)
        except ValueError:
            raise InvalidInput(
                f"activated_at {raw_time!r} is not an ISO 8601 time such as 2024-01-15T00:00:00Z"
            ) from None
        if activated_at.tzinfo is None:
            raise InvalidInput(
                f"activated_at {raw_time!r} has no time zone: add one, such as Z for UTC"
            )
    return SeedSubscriber(phone, contract_id, activated_at)


def _no_duplicates(
    path: Path,
    key: str,
    values: list[str],
    field: str,
    show: Callable[[str], str] = str,
) -> None:
    seen: dict[str, int] = {}
    for index, value in enumerate(values):
        if value in seen:
            raise SeedError(
                f"seed file {path}: {key}[{index}]: {field} {show(value)!r} repeats "
                f"{key}[{seen[value]}]"
            )
        seen[value] = index
