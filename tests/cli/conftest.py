"""The CLI against a running mesh (real processes, mutual TLS, free ports): commands run
in-process through services.cli.main.main, and one through the installed console script."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from services.cli import main as cli
from services.localmesh import Mesh, MeshSpec, MessengerSpec, OperatorSpec, demo_spec


@pytest.fixture(scope="session")
def cli_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    demo = demo_spec()
    spec = MeshSpec(
        operators=tuple(
            OperatorSpec(o.operator_id, o.carrier_name, o.seed_file) for o in demo.operators
        ),
        messengers=(
            MessengerSpec("alpha", verification_window_seconds=30),
            MessengerSpec("beta", verification_window_seconds=30),
        ),
        common_env={"IDMESH_PROGRESS_INTERVAL_SECONDS": "1"},
    )
    mesh = Mesh(spec, tmp_path_factory.mktemp("cli-mesh"))
    mesh.start()
    yield mesh
    mesh.stop()


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def idmesh(
    cli_mesh: Mesh, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Any:
    """idmesh(*args) -> Result: the CLI in-process, the mesh found through IDMESH_DATA_DIR."""
    monkeypatch.setenv("IDMESH_DATA_DIR", str(cli_mesh.data_dir))

    def run(*args: str) -> Result:
        capsys.readouterr()
        try:
            cli.main(list(args))
        except SystemExit as exc:
            code = int(exc.code or 0)
        else:  # pragma: no cover - main always exits
            code = 0
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


_serial = itertools.count(1)


def fresh_number(prefix: str = "+7903") -> str:
    """A Beeline-range number no other CLI test uses (+7903 777 xx xx)."""
    return f"{prefix}777{next(_serial):04d}"


def write_csv(
    path: Path, rows: list[str], header: str = "phone_number,contract_id,activated_at"
) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path
