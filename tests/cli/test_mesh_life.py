"""The local mesh's life: `idmesh up --base-port` beside another mesh, `idmesh down`, services
that never outlive their launcher (kill -9 included), and SIGINT stopping a mesh started in the
background (where the shell ignores SIGINT). Real `idmesh up` processes, as a person runs them."""

from __future__ import annotations

import json
import os
import random
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from services.cli import mesh as meshlib
from services.localmesh.mesh import MESH_FILE
from services.localmesh.process import ephemeral_low, port_free
from services.localmesh.spec import DEMO_OFFSETS
from tests.eventually import eventually_sync

pytestmark = pytest.mark.mesh

START_WITHIN = 120.0  # five services on a loaded 2-core machine


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # what a shell does to a background job


class Launcher:
    """`idmesh up --json` in a process of its own; layout: mesh.json's services once serving."""

    def __init__(
        self,
        data_dir: Path,
        base_port: int,
        *,
        background: bool = False,
        argv: Sequence[str] = (),
        cwd: Path | None = None,
    ) -> None:
        """argv: idmesh's arguments (`up ...`, as a make target's plan has them) instead of
        `up --data-dir data_dir --base-port base_port`, run in cwd."""
        self.data_dir = data_dir
        argv = argv or ("up", "--data-dir", str(data_dir), "--base-port", str(base_port))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "services.cli.main", *argv, "--json"],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=_ignore_sigint if background else None,
        )
        self.layout: dict[str, Any] = {}

    def wait_serving(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.process.stdout, selectors.EVENT_READ)
            if not sel.select(START_WITHIN):
                raise AssertionError(f"idmesh up printed nothing within {START_WITHIN:g}s")
        line = self.process.stdout.readline()
        assert line, f"idmesh up exited: {self.process.wait(10)}\n{self.stderr()}"
        self.layout = json.loads(line)
        return self.layout

    def pids(self) -> list[int]:
        return [int(info["pid"]) for info in self.layout.values()]

    def stderr(self) -> str:
        if self.process.poll() is None:
            return ""
        assert self.process.stderr is not None
        return self.process.stderr.read()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(30)
        meshlib.run_down(self.data_dir, timeout=30)  # whatever is left, so nothing leaks


def _running(pid: int) -> bool:
    return meshlib.is_running(pid, meshlib.SERVICE_MARK)


def _free_base(*, besides: int | None = None) -> int:
    """A base port whose mesh ports are all free (and 100 or more away from besides), below
    the kernel's ephemeral range: the ports other meshes on the machine take with port 0 (and
    every outgoing connection) come from that range, so one of them could take a port between
    this check and the launcher's bind."""
    low = ephemeral_low()
    for _ in range(200):
        base = random.randrange(10_000, max(10_100, low - 100), 100)
        if besides is not None and abs(base - besides) < 100:
            continue
        ports = [base + p for offsets in DEMO_OFFSETS.values() for p in offsets]
        if all(port_free(f"127.0.0.1:{p}") for p in ports):
            return base
    raise AssertionError("no free base port")


@pytest.fixture
def launchers() -> Iterator[list[Launcher]]:
    started: list[Launcher] = []
    yield started
    for launcher in started:
        launcher.close()


def test_two_meshes_run_side_by_side_and_a_killed_launcher_takes_its_services_along(
    tmp_path: Path, launchers: list[Launcher]
) -> None:
    base_a = _free_base()
    base_b = _free_base(besides=base_a)
    a = Launcher(tmp_path / "a", base_a)
    launchers.append(a)
    b = Launcher(tmp_path / "b", base_b)
    launchers.append(b)
    layout_a, layout_b = a.wait_serving(), b.wait_serving()
    assert layout_a["notifier"]["address"] == f"127.0.0.1:{base_a + 10}"
    assert layout_a["gateway-beta"]["metrics"] == f"127.0.0.1:{base_a + 95}"
    assert layout_b["registry-beeline"]["address"] == f"127.0.0.1:{base_b + 1}"
    assert all(_running(pid) for pid in a.pids() + b.pids())

    a.process.kill()  # kill -9: the launcher gets no chance to stop anything
    a.process.wait(10)
    eventually_sync(
        lambda: not any(_running(pid) for pid in a.pids()),
        within=30,
        what="the killed launcher's services to exit",
    )
    assert all(_running(pid) for pid in b.pids())  # the other mesh is untouched

    down = subprocess.run(
        [sys.executable, "-m", "services.cli.main", "down", "--data-dir", str(b.data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert down.returncode == 0, down.stderr
    assert b.process.wait(30) == 0
    assert not any(_running(pid) for pid in b.pids())
    assert not (b.data_dir / MESH_FILE).exists()


def test_sigint_stops_a_mesh_started_in_the_background(
    tmp_path: Path, launchers: list[Launcher]
) -> None:
    mesh = Launcher(tmp_path / "bg", _free_base(), background=True)
    launchers.append(mesh)
    mesh.wait_serving()
    os.kill(mesh.process.pid, signal.SIGINT)
    assert mesh.process.wait(90) == 0
    assert mesh.process.stdout is not None
    report = mesh.process.stdout.read()
    assert "stopping" in report
    assert all(f"{name}: exit 0" in report for name in mesh.layout), report
    assert not any(_running(pid) for pid in mesh.pids())
    assert not (mesh.data_dir / MESH_FILE).exists()


def test_a_second_launcher_on_the_same_data_dir_is_refused_and_down_without_a_mesh_says_so(
    tmp_path: Path,
) -> None:
    down = subprocess.run(
        [sys.executable, "-m", "services.cli.main", "down", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert down.returncode == 1 and "no mesh found" in down.stderr
    started = time.monotonic()
    bad = subprocess.run(
        [sys.executable, "-m", "services.cli.main", "up", "--base-port", "80"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "argument --base-port: must be 1024 to" in bad.stderr
    assert time.monotonic() - started < 60


def test_down_without_a_folder_stops_the_mesh_of_make_up_pg_from_another_terminal(
    tmp_path: Path, launchers: list[Launcher]
) -> None:
    """`make down` runs `idmesh down` with no folder: it finds the mesh in ./data-pg (the folder
    of `make up-pg`) when ./data has none, and says when there is nothing to stop."""
    env = {k: v for k, v in os.environ.items() if k != "IDMESH_DATA_DIR"}
    down = [sys.executable, "-m", "services.cli.main", "down"]
    idle = subprocess.run(down, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert idle.returncode == 0, idle.stderr
    assert "no mesh found (data/mesh.json or data-pg/mesh.json): nothing to stop" in idle.stderr

    mesh = Launcher(tmp_path / "data-pg", _free_base())
    launchers.append(mesh)
    mesh.wait_serving()
    stopped = subprocess.run(
        down, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert stopped.returncode == 0, stopped.stderr
    assert f"stopping the mesh at data-pg (idmesh up, process {mesh.process.pid})" in stopped.stdout
    assert mesh.process.wait(30) == 0
    assert not any(_running(pid) for pid in mesh.pids())
    assert not (mesh.data_dir / MESH_FILE).exists()


def _make_plan(*args: str) -> list[str]:
    """The commands `make -n ARGS` would run in the repository."""
    plan = subprocess.run(
        ["make", "-n", *args],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert plan.returncode == 0, plan.stderr
    return [line.strip() for line in plan.stdout.splitlines()]


def test_make_down_looks_for_any_mesh_unless_given_a_folder() -> None:
    assert ".venv/bin/idmesh down" in _make_plan("down")  # data, else data-pg
    assert ".venv/bin/idmesh down --data-dir data2" in _make_plan("down", "DATA=data2")


def test_make_reset_stops_the_mesh_and_deletes_the_data_but_not_the_venv() -> None:
    lines = _make_plan("reset")
    assert lines.index(".venv/bin/idmesh down") < lines.index("rm -rf data data-pg"), lines
    assert not any(".venv" in line and "rm " in line for line in lines)
