"""`make up-pg STANDBY=1` and `make failover`, run as docs/operations.md shows them: the mesh on
an embedded primary with a synchronous streaming standby, the services given both servers in one
URL; the primary crashed and the standby promoted under the running mesh, which answers on the
new primary with everything acknowledged before; `make down` stops the services and both
servers, also after the launcher was killed; the next start keeps the data. The commands are the
ones `make -n` prints, run in a folder of their own."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.cli import mesh as meshlib
from services.localmesh.mesh import MESH_FILE, load_layout
from services.localmesh.postgres import PostgresPair
from tests.cli.test_mesh_life import Launcher, _free_base
from tests.eventually import eventually_sync

pytestmark = pytest.mark.mesh

REPO = Path(__file__).resolve().parents[2]

U1_NUMBER = "+7 903 123-45-67"  # deploy/demo's Beeline subscriber (the README's)
U2_NUMBER = "+79219876543"  # and MegaFon's


def make_command(*args: str) -> list[str]:
    """The idmesh arguments of the one command `make -n ARGS` would run."""
    plan = subprocess.run(
        ["make", "-n", *args], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert plan.returncode == 0, plan.stderr
    lines = [line for line in plan.stdout.replace("\\\n", " ").splitlines() if "idmesh" in line]
    assert len(lines) == 1, plan.stdout
    words = shlex.split(lines[0])
    assert words[0] == ".venv/bin/idmesh", words
    return words[1:]


class Cli:
    """`idmesh ...` from the folder the mesh runs in, with IDMESH_DATA_DIR as the docs export."""

    def __init__(self, cwd: Path, data_dir: str | None) -> None:
        self.cwd = cwd
        self.env = {k: v for k, v in os.environ.items() if k != "IDMESH_DATA_DIR"}
        if data_dir is not None:
            self.env["IDMESH_DATA_DIR"] = data_dir

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "services.cli.main", *args],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def json(self, *args: str) -> dict[str, Any]:
        done = self.run(*args, "--json")
        assert done.returncode == 0, done.stdout + done.stderr
        result: dict[str, Any] = json.loads(done.stdout)
        return result

    def start(self, user: str, number: str) -> str:
        started = self.json("identify", "start", "-m", "alpha", "-u", user, "-p", number)
        identification_id: str = started["identification"]["identification_id"]
        return identification_id

    def confirm(self, identification_id: str) -> str:
        state: str = self.json("identify", "confirm", "-m", "alpha", identification_id)[
            "identification"
        ]["state"]
        return state

    def shown(self, user: str) -> str:
        state: str = self.json("identify", "show", "-m", "alpha", "-u", user)["identification"][
            "state"
        ]
        return state

    def all_serving(self) -> bool:
        return self.run("status").returncode == 0


@pytest.fixture
def pair_folders(tmp_path: Path) -> Iterator[Path]:
    """Where the servers' data goes; whatever a failed test leaves running is stopped."""
    folder = tmp_path / "data-pg" / "postgres-pair"
    yield folder
    if (folder / PostgresPair.STATE).exists():
        PostgresPair(folder).stop()


def _service_url(layout: dict[str, Any], service: str) -> str:
    environ = Path(f"/proc/{layout[service]['pid']}/environ").read_bytes().split(b"\0")
    variables = dict(v.decode().split("=", 1) for v in environ if b"=" in v)
    return variables["IDMESH_DATABASE_URL"]


@pytest.mark.timeout(600)
def test_a_mesh_with_a_synchronous_standby_fails_over_and_answers_on_the_new_primary(
    tmp_path: Path, pair_folders: Path
) -> None:
    up = make_command("up-pg", "STANDBY=1", f"BASE_PORT={_free_base()}")
    assert up[:6] == ["up", "--postgres", "--replicas", "2", "--data-dir", "data-pg"], up
    assert "--standby" in up
    assert make_command("failover") == ["failover", "--data-dir", "data-pg"]
    assert make_command("down") == ["down"]

    mesh = Launcher(tmp_path / "data-pg", 0, argv=up, cwd=tmp_path)  # terminal 1
    try:
        layout = mesh.wait_serving()
        cli = Cli(tmp_path, "data-pg")
        pair = PostgresPair(pair_folders)
        a, b = pair.server("pg-a"), pair.server("pg-b")
        # pg-a the primary, pg-b streaming from it synchronously, a standby in recovery
        replication = "SELECT state, sync_state FROM pg_stat_replication"
        assert a.query(replication) == [["streaming", "sync"]]
        assert a.query("SHOW synchronous_commit") == [["on"]]
        assert b.query("SELECT pg_is_in_recovery()") == [["t"]]
        url = _service_url(layout, "registry-beeline-2")
        assert url == (
            f"postgresql://postgres@127.0.0.1:{a.port},127.0.0.1:{b.port}"
            "/idmesh_registry_beeline?target_session_attrs=read-write"
        )

        u1 = cli.start("u1", U1_NUMBER)
        assert cli.confirm(u1) == "IDENTIFICATION_STATE_IDENTIFIED"
        u2 = cli.start("u2", U2_NUMBER)  # its code is sent; confirmed after the failover

        failover = cli.run(*make_command("failover"))
        assert failover.returncode == 0, failover.stdout + failover.stderr
        assert "pg-b is the primary" in failover.stdout
        assert "pg-a rebuilt as its synchronous standby" in failover.stdout
        assert b.query("SELECT pg_is_in_recovery()") == [["f"]]
        assert b.query(replication) == [["streaming", "sync"]]  # pg-a, from pg-b
        assert a.query("SELECT pg_is_in_recovery()") == [["t"]]

        # the services followed (no restart): healthy again, answering from pg-b
        eventually_sync(cli.all_serving, within=60, what="every replica SERVING again")
        assert cli.shown("u1") == "IDENTIFICATION_STATE_IDENTIFIED"
        assert cli.confirm(u2) == "IDENTIFICATION_STATE_IDENTIFIED"
        states = b.query(
            "SELECT user_id, state FROM identifications ORDER BY user_id",
            database="idmesh_gateway_alpha",
        )
        assert states == [["u1", "IDENTIFIED"], ["u2", "IDENTIFIED"]]
        assert {info["pid"] for info in layout.values()} == {
            info["pid"] for info in load_layout(tmp_path / "data-pg").values()
        }

        down = Cli(tmp_path, None).run(*make_command("down"))
        assert down.returncode == 0, down.stderr
        assert mesh.process.wait(60) == 0
        assert not any(meshlib.is_running(pid, meshlib.SERVICE_MARK) for pid in mesh.pids())
        assert not a.alive() and not b.alive()
        assert not (tmp_path / "data-pg" / MESH_FILE).exists()
    finally:
        mesh.close()

    # the next start keeps the data, pg-b the primary; a launcher killed with -9 leaves the
    # servers running (nothing stops them but itself), and `make down` stops them then
    again = Launcher(tmp_path / "data-pg", 0, argv=up, cwd=tmp_path)
    try:
        again.wait_serving()
        assert b.query("SELECT pg_is_in_recovery()") == [["f"]]
        assert b.query(replication) == [["streaming", "sync"]]
        assert cli.shown("u2") == "IDENTIFICATION_STATE_IDENTIFIED"
        again.process.kill()
        again.process.wait(30)
        eventually_sync(
            lambda: not any(meshlib.is_running(p, meshlib.SERVICE_MARK) for p in again.pids()),
            within=60,
            what="the killed launcher's services to exit",
        )
        assert a.alive() and b.alive()
        down = Cli(tmp_path, None).run(*make_command("down"))
        assert down.returncode == 0, down.stderr
        assert not a.alive() and not b.alive()
    finally:
        again.close()
