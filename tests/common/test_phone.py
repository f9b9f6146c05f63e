"""Phone numbers: normalisation to E.164, refusals that name the problem, masking."""

import pytest

from services.common.phone import InvalidPhoneNumber, mask, parse_mobile, region_of, require_e164


@pytest.mark.parametrize("raw", ["+79031234567", "8 903 123-45-67", "+7 (903) 123 45 67"])
def test_russian_mobile_numbers_normalise_to_e164(raw: str) -> None:
    assert parse_mobile(raw) == "+79031234567"


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("", "empty"),
        ("hello", "not a phone number"),
        ("+7903123", "not a valid number"),
        ("+74951234567", "not a mobile number"),
    ],
)
def test_unusable_numbers_are_refused_with_the_problem_named(raw: str, problem: str) -> None:
    with pytest.raises(InvalidPhoneNumber, match=problem):
        parse_mobile(raw)


def test_wire_form_must_already_be_e164() -> None:
    assert require_e164("+79031234567") == "+79031234567"
    with pytest.raises(InvalidPhoneNumber, match=r"E\.164"):
        require_e164("89031234567")


def test_mask_keeps_prefix_and_last_two_digits_only() -> None:
    assert mask("+79031234567") == "+7903*****67"
    assert "1234" not in mask("+79031234567")


@pytest.mark.parametrize(
    "text", ["+79031234567x", "+79031234567 ext. 5", "tel:+79031234567", "+7903123456;7"]
)
def test_letters_or_trailing_garbage_in_a_number_are_refused(text: str) -> None:
    with pytest.raises(InvalidPhoneNumber, match="is not a phone number") as e:
        parse_mobile(text)
    assert e.value.field == "phone_number"


def test_usual_separators_are_accepted() -> None:
    assert parse_mobile("8 (903) 123-45-67") == "+79031234567"
    assert parse_mobile("+7 903 123.45.67") == "+79031234567"


def test_region_of_a_number() -> None:
    assert region_of("+79031234567") == "RU"
    assert region_of("+12025550123") == "US"
