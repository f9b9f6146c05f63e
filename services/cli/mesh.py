"""`idmesh up` and `idmesh down`: the demo mesh of services.localmesh run in the foreground until
Ctrl-C, SIGTERM or `idmesh down`, which finds it by its data folder's mesh.json."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

from services.localmesh.mesh import MESH_FILE, Mesh, load_layout, read_mesh_file
from services.localmesh.postgres import PostgresPair
from services.localmesh.spec import MeshError, PostgresSpec, demo_spec


def is_running(pid: object, markers: tuple[str, ...]) -> bool:
    """Whether pid is a live process whose command line contains one of markers (on Linux;
    elsewhere only whether it is alive), so that a reused process id is never signalled."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # another user's process: not ours
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.parent.is_dir():
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return False
        return any(marker in text for marker in markers)
    return True


# What the command lines of a launcher (`idmesh up`, `python -m services.cli.main up`) and of a
# service (`python -m services.notifier`) contain.
LAUNCHER_MARK = ("idmesh", "services.cli")
SERVICE_MARK = ("services.",)


def running_launcher(data_dir: Path) -> int | None:
    """The process id of the live `idmesh up` of data_dir's mesh, if there is one."""
    try:
        pid = read_mesh_file(data_dir).get("launcher")
    except (MeshError, ValueError):
        return None
    return pid if is_running(pid, LAUNCHER_MARK) else None


def run_up(
    data_dir: Path,
    *,
    as_json: bool = False,
    base_port: int | None = None,
    postgres: PostgresSpec | None = None,
    replicas: int = 1,
) -> int:
    """`idmesh up`: start the demo mesh, print where each service listens, stop on Ctrl-C,
    SIGINT or SIGTERM (also when started in the background, where a shell ignores SIGINT).
    as_json: print the layout (mesh.json's services) as one JSON line once all are serving.
    On PostgreSQL a service process that exits (a replica killed) is started again, as an
    orchestrator would, while the other replicas carry on; on SQLite the mesh stops."""
    try:
        mesh = Mesh(demo_spec(base_port, postgres=postgres, replicas=replicas), data_dir)
    except MeshError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    other = running_launcher(mesh.data_dir)
    if other is not None:
        print(
            f"error: a mesh already runs at {mesh.data_dir} (idmesh up, process {other}): stop "
            f"it with `idmesh down --data-dir {data_dir}`, or give another --data-dir",
            file=sys.stderr,
        )
        return 1
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        raise KeyboardInterrupt

    # Both, explicitly: a shell starts a background job (`make up &`) with SIGINT ignored.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if not as_json:
        print(f"starting the idmesh mesh under {mesh.data_dir} ...", flush=True)
    try:
        try:
            mesh.start()
        except MeshError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        mesh.write_mesh_file(launcher_pid=os.getpid())
        if as_json:
            print(json.dumps(load_layout(mesh.data_dir)), flush=True)
        else:
            print(mesh.table())
            if mesh.postgres_pair is not None:
                print(_pair_summary(mesh.postgres_pair, data_dir))
            print(
                "\nall services SERVING. Try: idmesh status | idmesh identify --help. "
                "Ctrl-C (or idmesh down) stops."
            )
        while True:
            for name, svc in mesh.services.items():
                if svc.running:
                    continue
                code = svc.process.returncode if svc.process is not None else None
                if postgres is None:
                    print(f"error: {name} exited; see {svc.log_path}", file=sys.stderr)
                    raise KeyboardInterrupt
                print(f"{name} exited (status {code}); starting it again ...", flush=True)
                try:
                    mesh.restart(name)
                except MeshError as exc:
                    print(f"error: {exc}", file=sys.stderr)
                    raise KeyboardInterrupt from None
                mesh.write_mesh_file(launcher_pid=os.getpid())
                print(f"{name} SERVING again", flush=True)
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)
        codes = mesh.stop()
        for name, code in codes.items():
            print(f"  {name}: exit {code}", flush=True)
        (mesh.data_dir / MESH_FILE).unlink(missing_ok=True)
    return 0


def _pair_summary(pair: PostgresPair, data_dir: Path) -> str:
    servers = "\n".join(f"  {line}" for line in pair.describe())
    return (
        f"\nPostgreSQL (data under {pair.folder}), the services' URL naming both:\n{servers}\n"
        f"Fail over: make failover (idmesh failover --data-dir {data_dir}) crashes the primary,\n"
        "promotes the standby and rebuilds the old primary as its standby; the services follow."
    )


def run_failover(data_dir: Path) -> int:
    """`idmesh failover`: the PostgreSQL primary of the running mesh of data_dir crashes, its
    synchronous standby is promoted, the old primary is rebuilt as the new one's standby. The
    services are not told: they follow through their multi-host URL."""
    try:
        document = read_mesh_file(data_dir)
    except MeshError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    folder = document.get("postgres_pair")
    if not folder:
        print(
            f"error: the mesh at {data_dir} runs without a standby: start it with "
            "`make up-pg STANDBY=1` (idmesh up --postgres --standby)",
            file=sys.stderr,
        )
        return 1
    if running_launcher(data_dir) is None:
        print(f"error: the mesh at {data_dir} is not running (no idmesh up)", file=sys.stderr)
        return 1
    try:
        pair = PostgresPair(Path(folder))
        pair.check_failover()
        old, new = pair.primary_name, pair.standby_name
        print(
            f"crashing the primary {old} (pg_ctl stop -m immediate) and promoting {new} ...",
            flush=True,
        )
        done = pair.failover()
    except MeshError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"{done.promoted} is the primary {done.promote_seconds:.1f} s after the crash; "
        f"{done.crashed} rebuilt as its synchronous standby in {done.rejoin_seconds:.1f} s"
    )
    print("\n".join(f"  {line}" for line in pair.describe()))
    return 0


def run_down(data_dir: Path, *, timeout: float = 60.0) -> int:
    """`idmesh down`: stop the mesh of data_dir. SIGTERM to its launcher, which stops every
    service and removes mesh.json; without a live launcher (killed), SIGTERM to any service
    still running. 0 once everything has exited."""
    try:
        document = read_mesh_file(data_dir)
    except MeshError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    launcher = document.get("launcher")
    services = {name: info.get("pid") for name, info in document["services"].items()}
    deadline = time.monotonic() + timeout
    if is_running(launcher, LAUNCHER_MARK):
        assert isinstance(launcher, int)
        print(f"stopping the mesh at {data_dir} (idmesh up, process {launcher}) ...", flush=True)
        os.kill(launcher, signal.SIGTERM)
    else:
        live = {n: p for n, p in services.items() if is_running(p, SERVICE_MARK)}
        print(
            f"the mesh at {data_dir} has no launcher running; stopping {len(live)} "
            "service(s) left ...",
            flush=True,
        )
        for pid in live.values():
            assert isinstance(pid, int)
            os.kill(pid, signal.SIGTERM)
    while time.monotonic() < deadline:
        left = [n for n, p in services.items() if is_running(p, SERVICE_MARK)]
        if not left and not is_running(launcher, LAUNCHER_MARK):
            if document.get("postgres_pair"):  # a launcher that was killed left them running
                try:
                    PostgresPair(Path(document["postgres_pair"])).stop()
                except MeshError as exc:
                    print(f"error: {exc}", file=sys.stderr)
                    return 1
            (data_dir / MESH_FILE).unlink(missing_ok=True)
            print("stopped", flush=True)
            return 0
        time.sleep(0.2)
    print(
        f"error: still running after {timeout:g}s: {', '.join(left) or 'the launcher'}",
        file=sys.stderr,
    )
    return 1
