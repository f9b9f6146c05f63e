"""Phone numbers: normalisation to E.164 with phonenumbers, and masking for logs."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Final

import phonenumbers
from phonenumbers import PhoneNumberType

from services.common.errors import InvalidInput, quote

DEFAULT_REGION = "RU"
_MOBILE_TYPES = {PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE}
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
# What a written number may hold: an optional leading +, then digits and the usual separators.
# Anything else (letters, an extension, trailing garbage such as "+79031234567x") is refused
# rather than silently dropped by the parser.
_NUMBER_TEXT = re.compile(r"^\+?[0-9 ().-]+$")
# The longest text a number is parsed from (E.164 is at most 16 characters; separators added).
MAX_NUMBER_TEXT = 32


class InvalidPhoneNumber(InvalidInput):
    """The number cannot be used; the message says why."""

    REASON = "INVALID_PHONE_NUMBER"


@functools.lru_cache(maxsize=4096)
def parse_e164(raw: str, *, region: str = DEFAULT_REGION) -> str:
    """Normalise any form phonenumbers accepts to E.164; the number must be valid.

    Cached (a refusal is not): phonenumbers' parse and validity check take tens of
    microseconds, and one request meets the same number in several places."""
    text = (raw or "").strip()
    if not text:
        raise InvalidPhoneNumber("phone_number is empty: give a number such as +79031234567")
    if len(text) > MAX_NUMBER_TEXT or not _NUMBER_TEXT.match(text):
        raise InvalidPhoneNumber(
            f"phone_number {quote(mask(text))} is not a phone number: give only digits, an "
            "optional leading + and spaces, '-', '(' or ')', such as +79031234567"
        )
    try:
        parsed = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        raise InvalidPhoneNumber(
            f"phone_number {quote(mask(text))} is not a phone number: give it in E.164 form, "
            "such as +79031234567"
        ) from None
    if not phonenumbers.is_valid_number(parsed):
        raise InvalidPhoneNumber(
            f"phone_number {quote(mask(text))} is not a valid number in any numbering plan: "
            "check the digits and the country code"
        )
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def parse_mobile(raw: str, *, region: str = DEFAULT_REGION) -> str:
    """Normalise to E.164 and require a mobile number (identification is by mobile number).

    Fast for a number already in +7 E.164 form (its prefix's verdict, PrefixVerdicts), and for
    a number seen lately (a cache of answers; a refusal is not cached)."""
    if region != DEFAULT_REGION:
        return _parse_mobile(raw or "", region=region)
    return _parse_mobile_by_prefix(raw or "")


@functools.lru_cache(maxsize=4096)
def _parse_mobile(raw: str, *, region: str = DEFAULT_REGION) -> str:
    """parse_mobile itself: phonenumbers' parse, validity and type."""
    e164 = parse_e164(raw, region=region)
    if phonenumbers.number_type(phonenumbers.parse(e164)) not in _MOBILE_TYPES:
        raise InvalidPhoneNumber(
            f"phone_number {mask(e164)} is not a mobile number: identification needs the "
            "number of a mobile subscription"
        )
    return e164


# A number already in the E.164 form of +7 (Russia, Kazakhstan): "+7" and 10 national digits.
_PLUS7_E164 = re.compile(r"\+7\d{10}")
# Whether such a number is valid, and of which type, depends only on its first 6 national
# digits: every pattern of the numbering metadata for +7 ends in a run of at least 4 free digits
# (tests/common/test_phone.py proves it from the metadata, so a phonenumbers upgrade that
# changes this fails the test).
PLUS7_PREFIX_LEN: Final = 8  # "+7" and 6 national digits
_PREFIXES_MAX: Final = 1 << 17


class PrefixVerdicts:
    """check's answers (a normaliser such as parse_e164 or parse_mobile), with its verdict
    cached per "+7" and 6-digit prefix for numbers already in +7 E.164 form: a number of a
    prefix found valid and already normalised is returned as it is, without parsing (parsing
    takes tens of microseconds). Any other number, an invalid one included (for its exact
    message), goes through check itself. Memory is bounded (at most 2^17 prefixes)."""

    def __init__(self, check: Callable[[str], str]) -> None:
        self._check = check
        self._valid: dict[str, bool] = {}

    def __call__(self, raw: str) -> str:
        if _PLUS7_E164.fullmatch(raw):
            prefix = raw[:PLUS7_PREFIX_LEN]
            verdict = self._valid.get(prefix)
            if verdict:
                return raw
            if verdict is None:
                try:
                    e164 = self._check(raw)
                except InvalidPhoneNumber:
                    self._remember(prefix, False)
                    raise
                self._remember(prefix, e164 == raw)
                return e164
        return self._check(raw)

    def _remember(self, prefix: str, valid: bool) -> None:
        if len(self._valid) >= _PREFIXES_MAX:
            self._valid.clear()  # bounded memory, whatever numbers arrive
        self._valid[prefix] = valid


@functools.lru_cache(maxsize=4096)
def _require_e164(raw: str) -> str:
    if not _E164.match(raw or ""):
        raise InvalidPhoneNumber(
            f"phone_number {quote(mask(raw or ''))} is not in E.164 form (+ and 7 to 15 digits), "
            "such as +79031234567"
        )
    return parse_e164(raw)


_require_e164_by_prefix = PrefixVerdicts(_require_e164)
_parse_mobile_by_prefix = PrefixVerdicts(_parse_mobile)


def require_e164(raw: str) -> str:
    """Accept only an already-normalised E.164 number (the wire form between services).

    Fast for the numbers services send each other: a +7 number by its prefix's verdict
    (PrefixVerdicts), any other from a cache of recent answers (a refusal is not cached); a
    termination's events carry one number once per messenger, and the notifier checks every
    event of a Publish batch."""
    return _require_e164_by_prefix(raw or "")


def region_of(e164: str) -> str:
    """The ISO 3166 region of a valid E.164 number ("RU" for +79031234567), "" if none."""
    return phonenumbers.region_code_for_number(phonenumbers.parse(e164)) or ""


def mask(number: str) -> str:
    """Keep the country/range prefix and the last two digits: +79031234567 -> +7903*****67."""
    digits = number.strip()
    if len(digits) <= 6:
        return "*" * len(digits)
    keep_head = 5 if digits.startswith("+") else 4
    return digits[:keep_head] + "*" * (len(digits) - keep_head - 2) + digits[-2:]
