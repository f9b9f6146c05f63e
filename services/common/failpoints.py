"""Failpoints: named places where a test can make the process die as if killed with -9.

Modelled on etcd's gofail. IDMESH_FAILPOINTS="notifier.publish.after_commit,..." arms them;
unset (always, outside fault tests) they cost one dict lookup. A failpoint does not clean up,
flush or reply: it calls os._exit, which is what kill -9 at that instant would leave behind.
"""

from __future__ import annotations

import os
import sys

ENV = "IDMESH_FAILPOINTS"


def armed() -> frozenset[str]:
    return frozenset(p.strip() for p in os.environ.get(ENV, "").split(",") if p.strip())


def failpoint(name: str) -> None:
    if name in armed():
        print(f'{{"event": "failpoint.crash", "failpoint": "{name}"}}', file=sys.stderr, flush=True)
        os._exit(137)
