"""The local mesh's topology on PostgreSQL (`idmesh up --postgres --replicas N`), as built before
anything starts: replica names, a database per deployment, each replica calling its own lane."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from services.cli.main import main
from services.localmesh import (
    Mesh,
    MeshError,
    MeshSpec,
    PostgresSpec,
    demo_spec,
)
from services.localmesh.postgres import database_name, with_database

POSTGRES = PostgresSpec(url="postgresql://u:secret@db.example:5432/postgres?sslmode=require")


def test_every_service_gets_its_replicas_and_its_deployments_database(tmp_path: Path) -> None:
    mesh = Mesh(demo_spec(postgres=POSTGRES, replicas=2), tmp_path)
    deployments = {
        "notifier",
        "registry-beeline",
        "registry-megafon",
        "gateway-alpha",
        "gateway-beta",
    }
    assert set(mesh.services) == deployments | {f"{d}-2" for d in deployments}
    for name, svc in mesh.services.items():
        assert svc.info["deployment"] == name.removesuffix("-2")
        assert svc.env["IDMESH_DB_POOL_SIZE"] == "4"
    # The first replicas keep `make up`'s ports; the second ones take free ports.
    assert mesh.address("gateway-alpha") == "127.0.0.1:50071"
    assert mesh.address("gateway-alpha-2") != "127.0.0.1:50071"


def test_replica_i_calls_replica_i_of_what_it_depends_on(tmp_path: Path) -> None:
    mesh = Mesh(demo_spec(postgres=POSTGRES, replicas=2), tmp_path)
    for suffix in ("", "-2"):
        gateway = mesh.services[f"gateway-beta{suffix}"].env
        assert gateway["IDMESH_NOTIFIER_ADDRESS"] == mesh.address(f"notifier{suffix}")
        routes = dict(kv.split("=") for kv in gateway["IDMESH_OPERATORS"].split(","))
        assert routes == {
            "beeline": mesh.address(f"registry-beeline{suffix}"),
            "megafon": mesh.address(f"registry-megafon{suffix}"),
        }
        registry = mesh.services[f"registry-megafon{suffix}"].env
        assert registry["IDMESH_NOTIFIER_ADDRESS"] == mesh.address(f"notifier{suffix}")


def test_a_deployments_database_is_named_after_it_on_the_given_server() -> None:
    assert database_name("idmesh", "registry-beeline") == "idmesh_registry_beeline"
    url = with_database(POSTGRES.url or "", "idmesh_notifier")
    assert url == "postgresql://u:secret@db.example:5432/idmesh_notifier?sslmode=require"


def test_replicas_of_every_service_need_postgresql() -> None:
    demo = demo_spec()
    with pytest.raises(MeshError, match="only on PostgreSQL"):
        MeshSpec(operators=demo.operators, messengers=demo.messengers, replicas=2)


def test_the_sqlite_mesh_is_unchanged_by_the_option(tmp_path: Path) -> None:
    mesh = Mesh(demo_spec(), tmp_path)
    assert len(mesh.services) == 5
    assert not any("IDMESH_DATABASE_URL" in svc.env for svc in mesh.services.values())


def test_up_refuses_replicas_without_postgres(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["up", "--replicas", "2", "--data-dir", str(tmp_path)])
    assert exited.value.code == 2
    assert "--replicas needs --postgres" in capsys.readouterr().err
    usage = subprocess.run(
        [sys.executable, "-m", "services.cli.main", "up", "--replicas", "9"],
        capture_output=True,
        text=True,
    )
    assert usage.returncode == 2 and "--replicas" in usage.stderr


def test_a_standby_is_started_only_beside_the_embedded_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(MeshError, match="only beside the embedded server"):
        PostgresSpec(url="postgresql://u@db.example/postgres", standby=True)
    with pytest.raises(SystemExit) as exited:
        main(["up", "--standby", "--data-dir", str(tmp_path)])
    assert exited.value.code == 2
    assert "--standby needs --postgres" in capsys.readouterr().err
    monkeypatch.setenv("IDMESH_DATABASE_URL", "postgresql://u@db.example/postgres")
    with pytest.raises(SystemExit) as exited:
        main(["up", "--postgres", "--standby", "--data-dir", str(tmp_path)])
    assert exited.value.code == 2
    assert "unset IDMESH_DATABASE_URL" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # refused before anything started


def test_failover_needs_a_mesh_with_a_standby(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["failover", "--data-dir", str(tmp_path)])
    assert exited.value.code == 1
    assert "no mesh found" in capsys.readouterr().err
    Mesh(demo_spec(postgres=POSTGRES, replicas=2), tmp_path).write_mesh_file()
    with pytest.raises(SystemExit) as exited:
        main(["failover", "--data-dir", str(tmp_path)])
    assert exited.value.code == 1
    assert "runs without a standby: start it with `make up-pg STANDBY=1`" in (
        capsys.readouterr().err
    )
