"""Phone numbers: normalisation to E.164, refusals that name the problem, masking."""

import random
import re._constants as sre_constants
import re._parser as sre_parser

import phonenumbers
import pytest
from phonenumbers import PhoneMetadata

from services.common.phone import (
    PLUS7_PREFIX_LEN,
    InvalidPhoneNumber,
    PrefixVerdicts,
    _parse_mobile,
    _require_e164,
    mask,
    parse_mobile,
    region_of,
    require_e164,
)


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


# --- the per-prefix verdicts of +7 numbers ------------------------------------------------------


def _free_digit_depth(pattern: str, length: int = 10) -> int:
    """How many leading digits decide whether a `length`-digit string matches pattern: every
    top-level alternative that can match `length` digits must end in a fixed run of free digits
    (\\d{m}), and then only its first length - m digits matter. Fails when that is not so."""
    tree = sre_parser.parse(pattern)
    items = list(tree)
    alternatives = [tree]
    if len(items) == 1 and items[0][0] is sre_constants.BRANCH:
        alternatives = items[0][1][1]
    deepest = 0
    for alternative in alternatives:
        low, high = alternative.getwidth()
        if high < length or low > length:
            continue
        op, arg = list(alternative)[-1]
        assert op is sre_constants.MAX_REPEAT, f"{pattern}: does not end in \\d{{m}}"
        least, most, body = arg
        digit = [(sre_constants.IN, [(sre_constants.CATEGORY, sre_constants.CATEGORY_DIGIT)])]
        assert least == most and list(body) == digit, f"{pattern}: does not end in \\d{{m}}"
        deepest = max(deepest, length - least)
    return deepest


def test_the_numbering_metadata_of_plus_7_decides_validity_within_the_cached_prefix() -> None:
    """The proof behind the per-prefix cache: for +7 numbers with 10 national digits, every
    pattern phonenumbers consults (region choice, validity, type) depends on at most the first
    6 national digits, the cache key's length."""
    regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE[7]
    assert set(regions) == {"RU", "KZ"}
    deepest = 0
    for region in regions:
        metadata = PhoneMetadata.metadata_for_region(region)
        assert metadata is not None
        if metadata.leading_digits:  # which of RU and KZ a +7 number belongs to
            deepest = max(deepest, sre_parser.parse(metadata.leading_digits).getwidth()[1])
        for name in (
            "general_desc",
            "fixed_line",
            "mobile",
            "toll_free",
            "premium_rate",
            "shared_cost",
            "personal_number",
            "voip",
            "pager",
            "uan",
            "voicemail",
        ):
            desc = getattr(metadata, name)
            if desc is not None and desc.national_number_pattern:
                deepest = max(deepest, _free_digit_depth(desc.national_number_pattern))
    assert deepest <= PLUS7_PREFIX_LEN - 2


def _answer(check: object, number: str) -> tuple[str, str]:
    try:
        return "ok", check(number)  # type: ignore[operator]
    except InvalidPhoneNumber as exc:
        return "invalid", exc.message


def test_require_e164_by_prefix_gives_the_parsers_answers() -> None:
    rnd = random.Random(1279)
    numbers = [f"+79{rnd.randrange(10**9):09d}" for _ in range(2000)]
    numbers += [f"+7{rnd.randrange(10**10):010d}" for _ in range(2000)]  # RU and KZ, any type
    numbers += [f"+77{rnd.randrange(10**9):09d}" for _ in range(300)]  # Kazakhstan
    numbers += ["+74951234567", "+78001234567", "+70000000000", "+4402071234567", "+1"]
    fast = PrefixVerdicts(_require_e164)
    for number in numbers * 2:  # the second time from the cached verdicts
        assert _answer(fast, number) == _answer(_require_e164, number), number


def test_parse_mobile_by_prefix_gives_the_parsers_answers() -> None:
    rnd = random.Random(1801)
    numbers = [f"+79{rnd.randrange(10**9):09d}" for _ in range(2000)]
    numbers += [f"+7{rnd.randrange(10**10):010d}" for _ in range(2000)]
    numbers += ["+74951234567", "8 903 123-45-67", "+7 (903) 123 45 67", "+4402071234567"]
    for number in numbers * 2:  # the second time from the cached verdicts
        assert _answer(parse_mobile, number) == _answer(_parse_mobile, number), number
