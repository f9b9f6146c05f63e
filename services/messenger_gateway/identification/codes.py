"""One-time codes: made at random, stored only as a keyed hash."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field

from services.messenger_gateway.identification.model import CODE_DIGITS


def new_code() -> str:
    """A uniformly random six-digit one-time code."""
    return f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"


@dataclass(frozen=True, slots=True)
class CodeHasher:
    """Stores one-time codes only as "hmac-sha256$salt$digest" (hex), keyed with a secret kept
    outside the database (IDMESH_OTP_KEY_FILE), so a copy of the database reveals no code.

    A six-digit code has 20 bits: what protects it in use is the attempt limit and the expiry,
    not the hash's cost. A slow hash (scrypt, ~50 ms) bought nothing against an attacker without
    the key and capped a gateway at ~10 identifications per second (docs/benchmarks.md)."""

    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.key) < 16:
            raise ValueError("the one-time-code key must be at least 16 bytes")

    def hash(self, code: str) -> str:
        salt = secrets.token_bytes(16)
        return f"hmac-sha256${salt.hex()}${self._digest(salt, code).hex()}"

    def matches(self, code: str, stored: str) -> bool:
        try:
            scheme, salt, digest = stored.split("$")
            if scheme != "hmac-sha256":
                return False
            expected = bytes.fromhex(digest)
            actual = self._digest(bytes.fromhex(salt), code)
        except ValueError:
            return False
        return hmac.compare_digest(actual, expected)

    def _digest(self, salt: bytes, code: str) -> bytes:
        return hmac.new(self.key, salt + code.encode(), hashlib.sha256).digest()
