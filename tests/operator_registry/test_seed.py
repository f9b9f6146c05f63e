"""The seed file: applied idempotently at start; a bad file is refused naming file and entry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from services.operator_registry.domain import AgreementState, ContractState
from services.operator_registry.seed import SeedError, apply_seed, load_seed
from services.operator_registry.service import RegistryService

from .conftest import NUMBER, OTHER_NUMBER, START

GOOD: dict[str, Any] = {
    "messengers": [
        {"messenger_id": "alpha", "display_name": "Alpha Chat"},
        {"messenger_id": "beta"},
    ],
    "subscribers": [
        {"phone_number": NUMBER, "contract_id": "BEE-0001", "activated_at": "2024-01-15T00:00:00Z"},
        {"phone_number": "8 905 111 22 33", "contract_id": "BEE-0002"},
    ],
}


def write(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "seed.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


async def test_seed_creates_messengers_and_subscribers_once(
    service: RegistryService, tmp_path: Path
) -> None:
    seed = load_seed(write(tmp_path, GOOD))
    first = await apply_seed(service, seed, START)
    assert (first.messengers_added, first.subscribers_added, first.subscribers_skipped) == (2, 2, 0)
    second = await apply_seed(service, seed, START)
    assert (second.messengers_added, second.subscribers_added, second.subscribers_skipped) == (
        0,
        0,
        2,
    )
    agreements = await service.list_messengers()
    assert [(a.messenger_id, a.display_name) for a in agreements] == [
        ("alpha", "Alpha Chat"),
        ("beta", "beta"),
    ]
    subscriber = await service.get_subscriber(NUMBER)
    assert subscriber.contract.activated_at.isoformat() == "2024-01-15T00:00:00+00:00"
    other = await service.get_subscriber(OTHER_NUMBER)
    assert other.contract.contract_id == "BEE-0002" and other.contract.activated_at == START


async def test_seed_leaves_suspended_messengers_and_numbers_with_any_contract_alone(
    service: RegistryService, tmp_path: Path
) -> None:
    await service.register_messenger("alpha")
    await service.suspend_messenger("alpha")
    await service.create_subscriber(NUMBER, "OLD-1")
    await service.terminate_contract(NUMBER)

    outcome = await apply_seed(service, load_seed(write(tmp_path, GOOD)), START)

    assert (outcome.messengers_added, outcome.subscribers_added) == (1, 1)
    alpha = next(a for a in await service.list_messengers() if a.messenger_id == "alpha")
    assert alpha.state is AgreementState.SUSPENDED
    old = await service.get_subscriber(NUMBER)
    assert (old.contract.contract_id, old.contract.state) == ("OLD-1", ContractState.TERMINATED)


async def test_seed_contract_id_taken_by_another_number_names_the_entry(
    service: RegistryService, tmp_path: Path
) -> None:
    await service.create_subscriber("+79261234567", "BEE-0002")
    seed = load_seed(write(tmp_path, GOOD))
    with pytest.raises(SeedError, match=r"seed\.json: subscribers\[1\]: contract_id 'BEE-0002'"):
        await apply_seed(service, seed, START)
    with pytest.raises(Exception, match="no contract"):
        await service.get_subscriber(NUMBER)  # nothing of the file was applied


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", r"not valid JSON at line 1"),
        ([], r"expected a JSON object"),
        ({"messenger": []}, r"unknown keys \['messenger'\]"),
        ({"messengers": {}}, r"'messengers' must be a list"),
        ({"messengers": [{"messenger_id": "Bad Id"}]}, r"messengers\[0\]: messenger_id 'Bad Id'"),
        ({"messengers": [{"id": "alpha"}]}, r"messengers\[0\]: unknown keys \['id'\]"),
        (
            {
                "subscribers": [
                    GOOD["subscribers"][0],
                    {"phone_number": "+74951234567", "contract_id": "X"},
                ]
            },
            r"subscribers\[1\]: phone_number \+7495\*\*\*\*\*67 is not a mobile number",
        ),
        ({"subscribers": [{"phone_number": NUMBER}]}, r"subscribers\[0\]: contract_id is required"),
        (
            {"subscribers": [{"phone_number": NUMBER, "contract_id": "A", "activated_at": "x"}]},
            r"subscribers\[0\]: activated_at 'x' is not an ISO 8601 time",
        ),
        (
            {
                "subscribers": [
                    {
                        "phone_number": NUMBER,
                        "contract_id": "A",
                        "activated_at": "2024-01-15T00:00:00",
                    }
                ]
            },
            r"subscribers\[0\]: activated_at .* has no time zone",
        ),
        (
            {
                "subscribers": [
                    {"phone_number": NUMBER, "contract_id": "A"},
                    {"phone_number": "+7 903 123 45 67", "contract_id": "B"},
                ]
            },
            r"subscribers\[1\]: phone_number '\+7903\*\*\*\*\*67' repeats subscribers\[0\]",
        ),
    ],
)
def test_bad_seed_file_is_refused_naming_the_file_and_entry(
    tmp_path: Path, content: Any, message: str
) -> None:
    path = write(tmp_path, content)
    with pytest.raises(SeedError, match=message) as refused:
        load_seed(path)
    assert str(refused.value).startswith(f"seed file {path}")


def test_missing_seed_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SeedError, match="cannot read it"):
        load_seed(tmp_path / "absent.json")
