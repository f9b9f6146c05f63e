"""Token buckets: a burst passes, the next is refused with its retry delay, time refills."""

from datetime import timedelta

import pytest

from services.common.config import ConfigError, Env
from services.common.ratelimit import KeyedTokenBucket, RateLimit, RateLimited


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_passes_then_the_key_is_refused_with_the_retry_delay() -> None:
    clock = Clock()
    bucket = KeyedTokenBucket(RateLimit(per_second=0.5, burst=3), clock=clock)
    for _ in range(3):
        bucket.acquire("+79031234567", "codes for this number")
    with pytest.raises(RateLimited) as e:
        bucket.acquire("+79031234567", "codes for this number")
    assert e.value.retry_after == timedelta(seconds=2)
    assert e.value.reason == "RATE_LIMITED"
    assert "retry in 2 s" in e.value.message
    bucket.acquire("+79051112233", "codes for this number")  # other keys are unaffected


def test_time_refills_the_bucket_up_to_the_burst() -> None:
    clock = Clock()
    bucket = KeyedTokenBucket(RateLimit(per_second=1.0, burst=2), clock=clock)
    bucket.acquire("k", "x")
    bucket.acquire("k", "x")
    with pytest.raises(RateLimited):
        bucket.acquire("k", "x")
    clock.now += 1.0
    bucket.acquire("k", "x")
    clock.now += 100.0  # refills to the burst, not beyond
    bucket.acquire("k", "x")
    bucket.acquire("k", "x")
    with pytest.raises(RateLimited):
        bucket.acquire("k", "x")


def test_memory_is_bounded_by_max_keys() -> None:
    bucket = KeyedTokenBucket(RateLimit(per_second=1.0, burst=1), clock=Clock(), max_keys=10)
    for i in range(100):
        bucket.acquire(f"k{i}", "x")
    assert len(bucket._buckets) == 10


def test_limits_come_from_the_environment() -> None:
    limit = RateLimit.from_env(
        Env({"IDMESH_OTP_PHONE_PER_HOUR": "36"}), "OTP_PHONE", per_hour=5, burst=3
    )
    assert limit == RateLimit(per_second=0.01, burst=3)
    with pytest.raises(ConfigError, match="IDMESH_OTP_PHONE_PER_HOUR"):
        RateLimit.from_env(
            Env({"IDMESH_OTP_PHONE_PER_HOUR": "0"}), "OTP_PHONE", per_hour=5, burst=3
        )
