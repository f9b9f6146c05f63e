"""Phone numbers: normalisation to E.164 with phonenumbers, and masking for logs."""

from __future__ import annotations

import functools
import re

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


@functools.lru_cache(maxsize=4096)
def parse_mobile(raw: str, *, region: str = DEFAULT_REGION) -> str:
    """Normalise to E.164 and require a mobile number (identification is by mobile number).
    Cached as parse_e164 is."""
    e164 = parse_e164(raw, region=region)
    if phonenumbers.number_type(phonenumbers.parse(e164)) not in _MOBILE_TYPES:
        raise InvalidPhoneNumber(
            f"phone_number {mask(e164)} is not a mobile number: identification needs the "
            "number of a mobile subscription"
        )
    return e164


@functools.lru_cache(maxsize=4096)
def require_e164(raw: str) -> str:
    """Accept only an already-normalised E.164 number (the wire form between services).

    Cached (a refusal is not): a termination's events carry one number once per messenger, and
    the notifier checks every event of a Publish batch; parsing is most of that check's cost."""
    if not _E164.match(raw or ""):
        raise InvalidPhoneNumber(
            f"phone_number {quote(mask(raw or ''))} is not in E.164 form (+ and 7 to 15 digits), "
            "such as +79031234567"
        )
    return parse_e164(raw)


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
