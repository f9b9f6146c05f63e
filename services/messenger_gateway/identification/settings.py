"""The identification flow's settings (config.py builds them from the environment)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from services.common.backoff import Backoff
from services.common.lease import default_replica_id
from services.common.ratelimit import RateLimit


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    messenger_id: str
    verification_window: timedelta = timedelta(minutes=20)
    otp_ttl: timedelta = timedelta(minutes=5)
    otp_max_attempts: int = 5
    verify_retry: Backoff = field(default_factory=lambda: Backoff(initial=0.2, maximum=10.0))
    # One-time codes per phone number and per user (code flooding, SMS pumping); None: no limit.
    otp_phone_limit: RateLimit | None = None
    otp_user_limit: RateLimit | None = None
    # ISO 3166 regions whose numbers may be identified (IDMESH_ALLOWED_COUNTRIES); empty: any.
    allowed_countries: frozenset[str] = frozenset({"RU"})
    # This replica's id, the holder of the leases of the verifications it runs, and their term
    # (renewed every third of it; another replica resumes a dead one's after it).
    replica_id: str = field(default_factory=lambda: default_replica_id(single=False))
    lease_ttl: timedelta = timedelta(seconds=6)
