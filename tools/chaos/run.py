"""The rounds: start the mesh, play each round's plan, heal, quiesce, check."""

from __future__ import annotations

import asyncio
import json
import sys
import time
import traceback
from collections import Counter
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path

from idmesh.registry.v1 import registry_pb2

from services.localmesh import Mesh, MeshSpec, MessengerSpec, OperatorSpec, PostgresSpec
from services.localmesh.netns import Host, Network
from tools.chaos.checker import Report, check, group
from tools.chaos.client import Client
from tools.chaos.database import Database
from tools.chaos.history import History, Record
from tools.chaos.nemesis import FaultStats, Nemesis
from tools.chaos.schedule import (
    DATABASE,
    MESSENGERS,
    OPERATORS,
    SERVICES,
    RoundPlan,
    filler,
    filler_gap,
    plan_round,
    replicas_of,
)
from tools.chaos.state import outstanding, read_apis, read_stores
from tools.chaos.workload import Workload

CARRIERS = {"beeline": "Beeline", "megafon": "MegaFon"}  # names in the numbering plan
MAX_SCENARIOS = 100  # a round's numbers have two digits for the scenario
QUIESCE_SLACK = 90.0  # beyond the window: restarts, reconnect backoffs, relay backoff


@dataclass(frozen=True)
class Options:
    seed: int
    rounds: int
    out: Path
    window: float = 12.0  # the gateways' verification window, seconds
    load_seconds: float = 10.0  # how long a round's scenarios keep starting and faults strike
    failpoints: tuple[str, ...] = ()  # arm only these (default: the whole catalogue)
    postgres: bool = False  # every service on PostgreSQL, with the database faults
    standby: bool = True  # on PostgreSQL: a synchronous streaming standby, and failovers
    replicas: int = 1  # of every service (more than one: PostgreSQL only)
    # on PostgreSQL: every replica and the database on a host of its own (a network namespace),
    # and partitions between hosts among the faults
    partitions: bool = False

    @property
    def database(self) -> str:
        """The database faults the schedule plans (schedule.plan_round)."""
        if not self.postgres:
            return ""
        return "standby" if self.standby else "postgres"


def chaos_spec(window: float, *, database_url: str | None = None, replicas: int = 1) -> MeshSpec:
    """Two registries, the notifier, two gateways; generous rate limits (the load identifies
    many numbers quickly), quick reconnects and progress marks (faults last seconds).
    database_url: every service on that PostgreSQL server, `replicas` of each."""
    return MeshSpec(
        postgres=PostgresSpec(url=database_url) if database_url else None,
        replicas=replicas,
        operators=tuple(OperatorSpec(op, CARRIERS[op]) for op in OPERATORS),
        messengers=tuple(MessengerSpec(m, verification_window_seconds=window) for m in MESSENGERS),
        common_env={
            "IDMESH_PROGRESS_INTERVAL_SECONDS": "1",
            "IDMESH_RELAY_POLL_SECONDS": "0.5",
            "IDMESH_RELAY_RETRY_MAX_SECONDS": "2",
            "IDMESH_VERIFY_RETRY_MAX_SECONDS": "1",
            "IDMESH_NOTIFIER_RETRY_MAX_SECONDS": "1",
            "IDMESH_OTP_PHONE_PER_HOUR": "1000000",
            "IDMESH_OTP_PHONE_BURST": "10000",
            "IDMESH_OTP_USER_PER_HOUR": "1000000",
            "IDMESH_OTP_USER_BURST": "10000",
            "IDMESH_LOG_LEVEL": "info",
        },
    )


def replay_command(options: Options) -> str:
    args = f"--seed {options.seed} --rounds {options.rounds}"
    if options.window != Options.window:
        args += f" --window {options.window:g}"
    if options.load_seconds != Options.load_seconds:
        args += f" --load-seconds {options.load_seconds:g}"
    if options.failpoints:
        args += f" --failpoints {','.join(options.failpoints)}"
    if options.postgres:
        args += f" --postgres --replicas {options.replicas}"
        if not options.standby:
            args += " --no-standby"
        args += " --partitions" if options.partitions else " --no-partitions"
    return f'make chaos CHAOS_ARGS="{args}"'


class Run:
    def __init__(
        self,
        options: Options,
        mesh: Mesh,
        client: Client,
        history: History,
        database: Database | None = None,
        network: Network | None = None,
        hosts: dict[str, Host] | None = None,
    ) -> None:
        self.options = options
        self.mesh = mesh
        self.client = client
        self.history = history
        self.faults = FaultStats()
        self.nemesis = Nemesis(mesh, history, self.faults, database, network, hosts)
        self.races = 0
        self.rounds_run = 0
        self._scenarios = 0
        self.report = Report()

    async def setup(self) -> None:
        """Agreements of both operators with both messengers."""
        for op in OPERATORS:
            stub = self.client.registry_admin(op)
            for m in MESSENGERS:
                await stub.RegisterMessenger(
                    registry_pb2.RegisterMessengerRequest(messenger_id=m), timeout=10
                )

    async def round(self, round_no: int) -> bool:
        o = self.options
        plan = plan_round(
            o.seed,
            round_no,
            load_seconds=o.load_seconds,
            window=o.window,
            failpoints=o.failpoints,
            replicas=o.replicas,
            database=o.database,
            partitions=o.partitions,
        )
        self.history.note("plan", round_no, plan=asdict(plan))
        self.races += sum(1 for s in plan.scenarios if s.kind == "race")
        first = len(self.history.records)
        began = time.monotonic()
        await self.play(plan)
        await self.nemesis.heal(round_no)
        quiet_after, left = await self.quiesce()
        snap = await asyncio.to_thread(read_stores, self.mesh)
        users = {
            (r.args["messenger"], r.args["user"])
            for r in self.history.ops()
            if "user" in r.args and "messenger" in r.args
        }
        await read_apis(self.client, snap, users)
        self.report = check(self.history.records, snap)
        if left:
            self.report.fail("not_quiesced", f"after {quiet_after:.0f}s: {'; '.join(left)}")
        self.history.note("check", round_no, counts=dict(self.report.counts))
        self.rounds_run = round_no
        print(self._line(plan, self.history.records[first:], time.monotonic() - began), flush=True)
        return not self.report.violations

    async def play(self, plan: RoundPlan) -> None:
        """The plan's scenarios and faults; while faults still strike, more scenarios (one
        every second or two) keep the load going, so that an armed failpoint gets hit."""
        workload = Workload(self.client, self.history, plan.round, self.options.window)
        loop = asyncio.get_running_loop()
        began = loop.time()
        faults = asyncio.create_task(self.nemesis.play(plan.round, plan.faults, began))
        load = [asyncio.create_task(workload.run(s, began)) for s in plan.scenarios]
        index = len(plan.scenarios)
        self._scenarios = index
        while index < MAX_SCENARIOS:
            gap = filler_gap(self.options.seed, plan.round, index)
            await asyncio.wait({faults}, timeout=gap)
            if faults.done():
                break
            extra = filler(self.options.seed, plan.round, index)
            self.races += extra.kind == "race"
            load.append(asyncio.create_task(workload.run(extra, loop.time())))
            index += 1
            self._scenarios = index
        await asyncio.gather(faults, *load)

    async def quiesce(self) -> tuple[float, list[str]]:
        """Wait until every notice is published, delivered, applied and acknowledged and no
        verification is pending (bounded: the window and QUIESCE_SLACK)."""
        loop = asyncio.get_running_loop()
        began = loop.time()
        while True:
            left = outstanding(await asyncio.to_thread(read_stores, self.mesh))
            waited = loop.time() - began
            if not left or waited > self.options.window + QUIESCE_SLACK:
                return waited, left
            await asyncio.sleep(0.5)

    def _line(self, plan: RoundPlan, records: list[Record], seconds: float) -> str:
        ops = [r for r in records if r.kind == "op"]
        outcome = Counter("ok" if r.ok else "refused" if r.ok is False else "unknown" for r in ops)
        faults = []
        for r in records:
            if r.kind != "fault":
                continue
            if r.name == "failpoint":
                hits = r.result.get("hits", 0)
                what = "fired" if r.result.get("fired") else f"hit {hits}x" if hits else "not hit"
                faults.append(f"{r.args['failpoint']}@{r.args['service']} {what}")
            elif r.name == "stall":
                faults.append(f"stall {r.args['service']} {r.args['seconds']:.1f}s")
            elif r.name == "db_crash":
                faults.append(f"database crash-restart {r.args['seconds']:.1f}s")
            elif r.name == "failover":
                faults.append("database failover")
            elif r.name == "db_latency":
                faults.append(f"database latency {r.args['delay_ms']}ms {r.args['seconds']:.1f}s")
            elif r.name == "partition":
                link = f"{r.args['service']}|{r.args['peer']}"
                faults.append(f"partition {link} {r.args['seconds']:.1f}s")
            else:
                faults.append(f"kill {r.args['service']}")
        verdict = "ok" if not self.report.violations else "VIOLATION"
        return (
            f"round {plan.round}/{self.options.rounds} ({seconds:.0f}s): {len(ops)} requests "
            f"({outcome['ok']} ok, {outcome['refused']} refused, {outcome['unknown']} unknown); "
            f"{self._scenarios} scenarios; faults: {', '.join(faults)}; {verdict}"
        )

    def totals(self) -> dict[str, object]:
        ops = list(self.history.ops())
        return {
            "seed": self.options.seed,
            "rounds": self.options.rounds,
            "rounds_run": self.rounds_run,
            "faults_by_kind": dict(self.faults.by_kind),
            "requests": len(ops),
            "requests_by_outcome": dict(
                Counter("ok" if r.ok else "refused" if r.ok is False else "unknown" for r in ops)
            ),
            "requests_by_kind": dict(Counter(r.name for r in ops)),
            "races": self.races,
            "kills": sum(self.faults.kills.values()),
            "kills_by_service": dict(self.faults.kills),
            "stalls_by_service": dict(self.faults.stalls),
            "database_faults": dict(self.faults.database),
            "partitions_by_link": dict(self.faults.partitions),
            "failpoints_armed": dict(self.faults.armed),
            "failpoints_fired": dict(self.faults.fired),
            "failpoints_hit": dict(self.faults.hit),
            "checked": dict(self.report.counts),
            "violations": self.report.violations,
        }


async def run(options: Options) -> int:
    """0: every round passed; 1: a violation (the seed to replay is printed); 2: the run
    itself failed."""
    if options.partitions:
        why = (
            "they need --postgres"
            if not options.postgres
            else await asyncio.to_thread(Network.available)
        )
        if why is not None:
            print(f"chaos: cannot inject partitions: {why}", file=sys.stderr)
            return 2
    options.out.mkdir(parents=True, exist_ok=True)
    print(f"chaos: seed {options.seed}, {options.rounds} rounds, run folder {options.out}")
    with ExitStack() as stack:
        database = None
        network = None
        hosts: dict[str, Host] = {}
        if options.partitions:
            network = stack.enter_context(Network.create())
            hosts[DATABASE] = network.add("db")
        if options.postgres:
            database = stack.enter_context(
                Database.create(standby=options.standby, host=hosts.get(DATABASE))
            )
            where = "a primary and a synchronous standby" if options.standby else "one server"
            print(f"chaos: every service on PostgreSQL ({where}), {options.replicas} replicas")
        if network is not None:
            for name in replicas_of(SERVICES, options.replicas):
                hosts[name] = network.add(name.replace("registry", "reg").replace("gateway", "gw"))
            print(
                f"chaos: every replica and the database on a host of its own "
                f"({network.subnet}.0/24), partitions among the faults"
            )
        return await _run(options, database, network, hosts)


async def _run(
    options: Options, database: Database | None, network: Network | None, hosts: dict[str, Host]
) -> int:
    spec = chaos_spec(
        options.window,
        database_url=database.url if database else None,
        replicas=options.replicas,
    )
    replica_hosts = {name: host for name, host in hosts.items() if name != DATABASE}
    mesh = Mesh(spec, options.out / "mesh", hosts=replica_hosts)
    await asyncio.to_thread(mesh.start, 60.0)
    client = Client(mesh)
    history = History(options.out / "history.jsonl")
    chaos = Run(options, mesh, client, history, database, network, hosts)
    passed = True
    try:
        await chaos.setup()
        for round_no in range(1, options.rounds + 1):
            if not await chaos.round(round_no):
                passed = False
                break
    except Exception:
        # The run itself failed (a service that would not start, a tool error): not a
        # verdict on the mesh, but the seed and the folder are what a person needs.
        traceback.print_exc()
        print(f"\nerror: the run stopped. seed {options.seed}; history: {history.path}")
        return 2
    finally:
        await client.close()
        history.close()
        await asyncio.to_thread(mesh.stop)
    totals = chaos.totals()
    (options.out / "summary.json").write_text(json.dumps(totals, indent=2, sort_keys=True))
    _print_totals(totals)
    if not passed:
        print("\nVIOLATIONS:")
        for invariant, lines in group(chaos.report.violations).items():
            print(f"  {invariant} ({len(lines)})")
            for line in lines[:20]:
                print(f"    {line}")
        print(f"\nseed {options.seed}: replay with {replay_command(options)}")
        print(f"history: {history.path}; logs: {mesh.data_dir / 'logs'}")
        return 1
    print(f"\nall invariants held. seed {options.seed}: {replay_command(options)}")
    return 0


def _print_totals(totals: dict[str, object]) -> None:
    print("\ntotals:")
    for key in (
        "rounds_run",
        "faults_by_kind",
        "requests",
        "requests_by_outcome",
        "requests_by_kind",
        "races",
        "kills",
        "kills_by_service",
        "stalls_by_service",
        "database_faults",
        "partitions_by_link",
        "failpoints_armed",
        "failpoints_fired",
        "failpoints_hit",
        "checked",
    ):
        print(f"  {key}: {totals[key]}")
