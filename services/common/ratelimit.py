"""Token buckets per key (a messenger, a phone number, a user), for abuse limits: verification
floods against an operator, one-time-code flooding and SMS pumping against a gateway.

Over the limit, RateLimited carries the delay after which one more request will pass
(retry_after), and the interceptor answers RESOURCE_EXHAUSTED with it in a google.rpc.RetryInfo.
Memory is bounded: at most max_keys buckets, the least recently used dropped first.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from services.common.config import ConfigError, Env
from services.common.errors import DomainError


class RateLimited(DomainError):
    """Too many requests for one key; retry after `retry_after` (RetryInfo)."""

    REASON = "RATE_LIMITED"


@dataclass(frozen=True, slots=True)
class RateLimit:
    per_second: float
    burst: int

    @classmethod
    def from_env(cls, env: Env, key: str, *, per_hour: float, burst: int) -> RateLimit:
        """IDMESH_<key>_PER_HOUR and IDMESH_<key>_BURST."""
        rate = env.float(f"{key}_PER_HOUR", per_hour, minimum=0)
        size = env.int(f"{key}_BURST", burst, minimum=1)
        if rate <= 0:
            raise ConfigError(f"{env.name(key + '_PER_HOUR')}: must be greater than 0")
        return cls(per_second=rate / 3600.0, burst=size)


class KeyedTokenBucket:
    def __init__(
        self,
        limit: RateLimit,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        self._limit = limit
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def acquire(self, key: str, what: str) -> None:
        """Take one token for key, or raise RateLimited("too many <what> ...")."""
        now = self._clock()
        tokens, last = self._buckets.pop(key, (float(self._limit.burst), now))
        tokens = min(float(self._limit.burst), tokens + (now - last) * self._limit.per_second)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            wait = (1.0 - tokens) / self._limit.per_second
            raise RateLimited(
                f"too many {what}: retry in {math.ceil(wait)} s",
                retry_after=timedelta(milliseconds=math.ceil(wait * 1000)),
            )
        self._buckets[key] = (tokens - 1.0, now)
        while len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)

    def give_back(self, key: str) -> None:
        """Return the token acquire() took for key (the request it let through did nothing)."""
        held = self._buckets.get(key)
        if held is not None:
            tokens, last = held
            self._buckets[key] = (min(float(self._limit.burst), tokens + 1.0), last)
