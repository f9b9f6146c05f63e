"""Phone numbers as the identification flow takes them: parsed, checked against the allowed
countries, and remembered (a retried or repeated start does not parse the same text again)."""

from __future__ import annotations

import functools
from collections.abc import Collection

from services.common.phone import mask, parse_mobile, region_of
from services.messenger_gateway.identification.model import CountryNotAllowed


@functools.lru_cache(maxsize=65536)
def _parsed(raw: str) -> tuple[str, str]:
    """(E.164, region) of a valid mobile number; a refusal is raised, not cached."""
    e164 = parse_mobile(raw)
    return e164, region_of(e164)


def allowed_number(raw: str, allowed: Collection[str]) -> str:
    """The number in E.164: a valid mobile number of an allowed country (all when empty)."""
    phone, region = _parsed(raw)
    if allowed and region not in allowed:
        raise CountryNotAllowed(
            f"phone_number {mask(phone)} is a number of {region or 'no country'}: this "
            f"messenger identifies numbers of {', '.join(sorted(allowed))} only",
            metadata={"country": region},
        )
    return phone
