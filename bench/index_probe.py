"""The delivery policy's index, measured alone in a process of its own: loaded from a gateway's
SQLite store by the store's own load_index path, then its size (the arrays' bytes, the overlay's
estimate, and the process's resident memory before and after), the time the load took, and
single decisions per CPU-second over random pairs. Prints one JSON object. (Linux with glibc:
/proc for the memory figures, malloc_trim for the heap the load left free.)

    python -m bench.index_probe GATEWAY_DB USERS
"""

from __future__ import annotations

import ctypes
import json
import os
import random
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

from bench import procs, seed

# the store's own snapshot read and load, as a gateway starting on this file runs it
from services.messenger_gateway.adapters.policy_store import _read_snapshot, built_index
from services.messenger_gateway.policy.model import MessageKind

DECISIONS = 200_000


def _peak_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e6
    return float("nan")


def probe(path: Path, users: int) -> dict[str, Any]:
    pid = os.getpid()
    rss_before = procs.rss_mb(pid) or float("nan")
    started, cpu = time.perf_counter(), time.process_time()
    index = _read_snapshot(path, partial(built_index, False))
    load_seconds = time.perf_counter() - started
    load_cpu = time.process_time() - cpu
    rss_after = procs.rss_mb(pid) or float("nan")
    peak = _peak_mb()
    # what the load left free on the C heap, returned to the system: the rest is the index and
    # what the process holds anyway
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    rss_trimmed = procs.rss_mb(pid) or float("nan")
    footprint = index.footprint()
    rng = random.Random(1279)
    kinds = [MessageKind.PERSONAL] * 16 + [MessageKind.AUTOMATED] * 3 + [MessageKind.STATE_MAILING]
    user = seed.policy_user
    pairs = [
        (user(rng.randrange(users)), user(rng.randrange(users)), rng.choice(kinds))
        for _ in range(DECISIONS)
    ]
    decide = index.decide
    cpu = time.process_time()
    allowed = sum(decide(s, r, k).allowed for s, r, k in pairs)
    decide_cpu = time.process_time() - cpu
    return {
        "users": footprint.users,
        "rows": footprint.rows,
        "pairs": footprint.pairs,
        "row_bytes": footprint.row_bytes,
        "pair_bytes": footprint.pair_bytes,
        "overlay_bytes": footprint.overlay_bytes,
        "index_bytes": footprint.total_bytes,
        "bytes_per_user": round(footprint.row_bytes / max(1, footprint.users), 2),
        "bytes_per_rule": round(footprint.pair_bytes / max(1, footprint.pairs), 2),
        "key_collisions": index.key_collisions(),
        "load_seconds": round(load_seconds, 2),
        "load_cpu_seconds": round(load_cpu, 2),
        "load_seconds_per_million_users": round(load_seconds * 1e6 / max(1, footprint.users), 2),
        "rss_before_mb": round(rss_before, 1),
        "rss_after_mb": round(rss_after, 1),
        "rss_peak_mb": round(peak, 1),
        "rss_after_trim_mb": round(rss_trimmed, 1),
        "rss_per_user_bytes": round((rss_after - rss_before) * 1e6 / max(1, footprint.users), 1),
        "decisions_per_cpu_second": round(DECISIONS / decide_cpu, 1) if decide_cpu else None,
        "decisions_allowed": allowed,
    }


def main() -> None:
    path, users = Path(sys.argv[1]), int(sys.argv[2])
    print(json.dumps(probe(path, users)))


if __name__ == "__main__":
    main()
