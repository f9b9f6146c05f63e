"""Exponential backoff with jitter, for retries and stream reconnects."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    initial: float = 0.1
    maximum: float = 5.0
    multiplier: float = 2.0

    def delays(self, rng: random.Random | None = None) -> Iterator[float]:
        """Endless delays: the capped exponential, with the upper half jittered ("equal jitter"),
        so that retries of many clients spread out but never fire back-to-back."""
        rnd = rng or random
        ceiling = self.initial
        while True:
            yield ceiling / 2 + rnd.uniform(0, ceiling / 2)
            ceiling = min(self.maximum, ceiling * self.multiplier)
