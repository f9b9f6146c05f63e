"""Periodic background jobs (retention pruning, SLA checks), one shape for every service."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from services.common.logging import get_logger

log = get_logger("idmesh.jobs")


async def run_every(seconds: float, job: Callable[[], Awaitable[object]], name: str) -> None:
    """Run job now and then every `seconds`, until cancelled; a failed run is logged."""
    while True:
        try:
            await job()
        except Exception:
            log.exception("background.job_failed", job=name)
        await asyncio.sleep(seconds)
