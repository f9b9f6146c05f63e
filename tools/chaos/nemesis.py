"""The faults: SIGKILL and restart, restart with a failpoint armed, SIGSTOP and SIGCONT; on
PostgreSQL a crash-restart of the database, a failover to its standby, and latency to it; on a
network of hosts (services.localmesh.netns) a partition between two hosts, healed after a while.

The Mesh's process control blocks (it waits for exits and health), so it runs in a thread;
one fault at a time, in the plan's order, never before its time.
"""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from services.common.failpoints import ENV as FAILPOINTS
from services.localmesh import Mesh, MeshError
from services.localmesh.netns import Host, Network
from tools.chaos.database import Database
from tools.chaos.history import History
from tools.chaos.schedule import Fault

START_TIMEOUT = 60.0


@dataclass
class FaultStats:
    kills: Counter[str] = field(default_factory=Counter)  # by service
    stalls: Counter[str] = field(default_factory=Counter)
    armed: Counter[str] = field(default_factory=Counter)  # by failpoint name
    fired: Counter[str] = field(default_factory=Counter)  # crashed (exit 137) while armed
    hit: Counter[str] = field(default_factory=Counter)  # armings that were hit (crash or sleep)
    database: Counter[str] = field(default_factory=Counter)  # db_crash, failover, db_latency
    partitions: Counter[str] = field(default_factory=Counter)  # by link, "a|b"
    by_kind: Counter[str] = field(default_factory=Counter)  # every fault injected, by kind


class Nemesis:
    def __init__(
        self,
        mesh: Mesh,
        history: History,
        stats: FaultStats,
        database: Database | None = None,
        network: Network | None = None,
        hosts: Mapping[str, Host] | None = None,
    ) -> None:
        """network, hosts: partitions cut links between these hosts (a service replica, or
        schedule.DATABASE, -> its host)."""
        self.mesh = mesh
        self.history = history
        self.stats = stats
        self.database = database
        self.network = network
        self.hosts = dict(hosts or {})
        self.stopped: set[str] = set()
        self.cuts: set[tuple[str, str]] = set()

    async def play(self, round_no: int, faults: tuple[Fault, ...], began: float) -> None:
        loop = asyncio.get_running_loop()
        for fault in faults:
            await asyncio.sleep(max(0.0, began + fault.at - loop.time()))
            record = self.history.begin(
                "fault",
                fault.kind,
                round_no,
                service=fault.service,
                seconds=fault.seconds,
                failpoint=fault.failpoint,
                delay_ms=fault.delay_ms,
                peer=fault.peer,
            )
            self.stats.by_kind[fault.kind] += 1
            result = await getattr(self, f"_{fault.kind}")(fault)
            self.history.end(record, True, **result)

    async def _kill(self, fault: Fault) -> dict[str, object]:
        await asyncio.to_thread(self.mesh.kill, fault.service)
        self.stats.kills[fault.service] += 1
        await asyncio.sleep(fault.seconds)
        await self._start(fault.service)
        return {}

    async def _failpoint(self, fault: Fault) -> dict[str, object]:
        """Restart the service (kill -9) with the failpoint armed; wait for it to fire (exit 137)
        at most fault.seconds; then restart it unarmed (after a short downtime when it fired)."""
        name = fault.failpoint.split("=", 1)[0]
        svc = self.mesh.services[fault.service]
        await asyncio.to_thread(self.mesh.kill, fault.service)
        log_from = svc.log_path.stat().st_size if svc.log_path.exists() else 0
        self.stats.kills[fault.service] += 1
        svc.env[FAILPOINTS] = fault.failpoint
        try:
            await self._start(fault.service)
        except MeshError:
            if svc.running or svc.wait(0) != 137:
                raise  # not the failpoint: it did not start
            # fired while starting (a notice redelivered at once, a resumed verification)
        finally:
            del svc.env[FAILPOINTS]
        self.stats.armed[name] += 1
        code = await asyncio.to_thread(svc.wait, fault.seconds)
        fired = code == 137
        if fired:
            self.stats.fired[name] += 1
            await asyncio.sleep(0.2)
        else:
            await asyncio.to_thread(self.mesh.kill, fault.service)
            self.stats.kills[fault.service] += 1
        await self._start(fault.service)
        hits = await asyncio.to_thread(_hits, svc.log_path, log_from, name)
        if hits:
            self.stats.hit[name] += 1
        return {"fired": fired, "exit": code, "hits": hits}

    async def _stall(self, fault: Fault) -> dict[str, object]:
        svc = self.mesh.services[fault.service]
        svc.signal(signal.SIGSTOP)
        self.stopped.add(fault.service)
        self.stats.stalls[fault.service] += 1
        try:
            await asyncio.sleep(fault.seconds)
        finally:
            svc.signal(signal.SIGCONT)
            self.stopped.discard(fault.service)
        return {}

    def _db(self) -> Database:
        if self.database is None:
            raise RuntimeError("a database fault in a run without PostgreSQL")
        return self.database

    async def _db_crash(self, fault: Fault) -> dict[str, object]:
        """pg_ctl stop -m immediate of the primary; started again fault.seconds later."""
        await asyncio.to_thread(self._db().crash_restart, fault.seconds)
        self.stats.database["db_crash"] += 1
        return {}

    async def _failover(self, fault: Fault) -> dict[str, object]:
        """The primary crashes, the standby is promoted, the old primary follows it."""
        database = self._db()
        promoted = database.standby.port if database.standby is not None else 0
        await asyncio.to_thread(database.failover)
        self.stats.database["failover"] += 1
        return {"promoted_port": promoted}

    async def _db_latency(self, fault: Fault) -> dict[str, object]:
        database = self._db()
        database.set_latency(fault.delay_ms / 1000)
        self.stats.database["db_latency"] += 1
        try:
            await asyncio.sleep(fault.seconds)
        finally:
            database.set_latency(0.0)
        return {}

    async def _partition(self, fault: Fault) -> dict[str, object]:
        """Every packet between the two hosts dropped, both ways, for fault.seconds; then the
        link healed. Each keeps reaching every other host (and the run's client)."""
        if self.network is None:
            raise RuntimeError("a partition in a run without a network of hosts")
        a, b = self.hosts[fault.service], self.hosts[fault.peer]
        await asyncio.to_thread(self.network.partition, a, b)
        self.cuts.add((fault.service, fault.peer))
        self.stats.partitions[f"{fault.service}|{fault.peer}"] += 1
        try:
            await asyncio.sleep(fault.seconds)
        finally:
            await asyncio.to_thread(self.network.heal, a, b)
            self.cuts.discard((fault.service, fault.peer))
        return {}

    async def _start(self, name: str) -> None:
        svc = self.mesh.services[name]
        if not svc.running:
            await asyncio.to_thread(svc.start)
        await asyncio.to_thread(self.mesh.wait_serving, name, START_TIMEOUT)

    async def heal(self, round_no: int) -> None:
        """No partition; the database up (and its standby), no latency; every service
        running, unarmed and not stopped."""
        if self.network is not None:
            for a, b in sorted(self.cuts):
                await asyncio.to_thread(self.network.heal, self.hosts[a], self.hosts[b])
            self.cuts.clear()
        database = await asyncio.to_thread(self.database.heal) if self.database else []
        for name in sorted(self.stopped):
            self.mesh.services[name].signal(signal.SIGCONT)
        self.stopped.clear()
        restarted = []
        for name, svc in self.mesh.services.items():
            if not svc.running:
                restarted.append(name)
                await self._start(name)
        self.history.note("heal", round_no, restarted=restarted, database=database)


def _hits(log: Path, offset: int, name: str) -> int:
    """How often the failpoint acted (crashed or slept) in the log written since offset."""
    with log.open("rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    return text.count(f'"failpoint": "{name}"')
