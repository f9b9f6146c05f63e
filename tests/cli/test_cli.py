"""`idmesh` commands against a running mesh: output, --json, exit codes, refusals."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from services.cli.mesh import Mesh
from tests.cli.conftest import fresh_number

pytestmark = pytest.mark.mesh

IDMESH = Path(sys.executable).with_name("idmesh")


def _user() -> str:
    return f"cli-{uuid.uuid4().hex[:8]}"


def test_status_shows_every_service_with_its_health_and_metrics(
    idmesh: Any, cli_mesh: Mesh
) -> None:
    table = idmesh("status")
    assert table.code == 0, table.err
    header, *lines = table.out.splitlines()
    assert header.split() == ["SERVICE", "KIND", "ADDRESS", "HEALTH", "METRICS"]
    assert {line.split()[0] for line in lines} == set(cli_mesh.services)
    assert all(line.split()[3] == "SERVING" for line in lines)
    rows = idmesh("status", "--json").json()
    assert {r["service"]: r["metrics"] for r in rows} == {
        name: cli_mesh.metrics_address(name) for name in cli_mesh.services
    }


def test_a_user_is_identified_and_may_send_through_the_cli(idmesh: Any) -> None:
    phone, user = fresh_number(), _user()
    created = idmesh("registry", "create", "-o", "beeline", "-p", phone, "-c", f"CLI-{user}")
    assert created.code == 0, created.err
    started = idmesh("identify", "start", "-m", "alpha", "-u", user, "-p", phone, "--json")
    assert started.code == 0, started.err
    ident = started.json()["identification"]
    assert ident["state"] == "IDENTIFICATION_STATE_AWAITING_CODE"
    confirmed = idmesh("identify", "confirm", "-m", "alpha", ident["identification_id"])
    assert confirmed.code == 0, confirmed.err
    assert "state: IDENTIFICATION_STATE_IDENTIFIED" in confirmed.out
    assert "operator_id: beeline" in confirmed.out
    access = idmesh("access", "-m", "alpha", "-u", user)
    assert (access.code, "allowed: True" in access.out) == (0, True)
    shown = idmesh("identify", "show", "-m", "alpha", "-u", user, "--json").json()
    assert shown["identification"]["state"] == "IDENTIFICATION_STATE_IDENTIFIED"
    sub = idmesh("registry", "get", "-o", "beeline", "-p", phone, "--json").json()["subscriber"]
    assert [b["messenger_id"] for b in sub["bindings"]] == ["alpha"]

    ended = idmesh("registry", "terminate", "-o", "beeline", "-p", phone, "--json").json()
    assert ended["notices_queued"] == 1
    watched = idmesh("notifier", "watch", "-m", "alpha", "--limit", "1", "--json")
    assert watched.code == 0, watched.err
    notice = json.loads(watched.out.splitlines()[0])["notice"]
    assert notice["seq"] and notice["event"]["operator_id"] == "beeline"
    status = idmesh("notifier", "status", "-m", "alpha", "--json")
    assert status.code == 0 and "head_seq" in status.json()


def test_agreements_and_verify_as_a_messenger(idmesh: Any) -> None:
    registered = idmesh("registry", "register", "-o", "megafon", "beta", "--name", "Beta IM")
    assert registered.code == 0, registered.err
    listed = idmesh("registry", "messengers", "-o", "megafon", "--json").json()
    assert "beta" in [a["messenger_id"] for a in listed["agreements"]]
    phone = fresh_number("+7926")
    idmesh("registry", "create", "-o", "megafon", "-p", phone, "-c", f"MEG-{uuid.uuid4().hex[:8]}")
    verified = idmesh(
        "registry", "verify", "-o", "megafon", "-p", phone, "--as-messenger", "beta", "--json"
    )
    assert verified.code == 0, verified.err
    assert verified.json()["result"] == "VERIFICATION_RESULT_IDENTIFIED"
    suspended = idmesh("registry", "suspend", "-o", "megafon", "beta", "--json")
    assert suspended.json()["agreement"]["state"] == "AGREEMENT_STATE_SUSPENDED"
    refused = idmesh("registry", "verify", "-o", "megafon", "-p", phone, "--as-messenger", "beta")
    assert refused.code == 1
    assert refused.err.startswith("error: PERMISSION_DENIED: ")


def test_a_refused_call_prints_one_error_line_and_exits_1(idmesh: Any) -> None:
    refused = idmesh("identify", "start", "-m", "alpha", "-u", _user(), "-p", "+74951234567")
    assert refused.code == 1
    assert refused.out == ""
    assert refused.err.count("\n") == 1
    assert refused.err.startswith("error: INVALID_ARGUMENT: ")
    assert "mobile" in refused.err


def test_health_and_metrics_of_one_service(idmesh: Any) -> None:
    health = idmesh("health", "registry-beeline")
    assert (health.code, health.out.strip().endswith("SERVING")) == (0, True)
    unknown = idmesh("health", "registry-nobody")
    assert unknown.code == 1 and unknown.err.startswith("error: the mesh has no service")
    metrics = idmesh("metrics", "notifier", "--grep", "idmesh_notifier_sla_limit", "--json")
    assert metrics.code == 0, metrics.err
    assert metrics.json() == [
        {"name": "idmesh_notifier_sla_limit_seconds", "labels": {}, "value": 86400.0}
    ]
    text = idmesh("metrics", "gateway-alpha", "--grep", "verification_window")
    assert text.out.strip() == "idmesh_gateway_verification_window_seconds 30"


@pytest.mark.parametrize(
    "args",
    [
        ["status"],
        ["health", "notifier"],
        ["metrics", "notifier"],
        ["registry", "get", "-o", "beeline", "-p", "+79031234567"],
        ["registry", "messengers", "-o", "beeline"],
        ["notifier", "status", "-m", "beta"],
        ["access", "-m", "beta", "-u", "nobody-yet"],
        ["sms", "-m", "alpha"],
        ["gateway", "route", "-m", "alpha", "-p", "+79031234567"],
    ],
)
def test_every_command_prints_json_with_json(idmesh: Any, args: list[str]) -> None:
    result = idmesh(*args, "--json")
    json.loads(result.out)  # one JSON document on stdout, whatever the exit code
    assert result.code in (0, 3), result.err


def test_the_console_script_refuses_with_one_line_and_status_1(cli_mesh: Mesh) -> None:
    done = subprocess.run(
        [str(IDMESH), "registry", "get", "-o", "beeline", "-p", "+79039999999"],
        capture_output=True,
        text=True,
        timeout=30,
        env={"IDMESH_DATA_DIR": str(cli_mesh.data_dir), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith("error: NOT_FOUND: ") and done.stderr.count("\n") == 1


def test_without_a_mesh_the_cli_says_how_to_start_one(idmesh: Any, tmp_path: Path) -> None:
    missing = idmesh("status", "--data-dir", str(tmp_path))
    assert missing.code == 1
    assert "make up" in missing.err


def test_a_parked_notice_is_listed_and_retried(idmesh: Any, cli_mesh: Mesh) -> None:
    # A notice the notifier refuses for good (its messenger id is not valid), as a registry bug
    # or a hand-edited row would queue it: the relay parks it and goes on.
    event_id = str(uuid.uuid4())
    db = cli_mesh.data_dir / "registry-megafon" / "registry.db"
    with sqlite3.connect(db, timeout=30) as conn:
        conn.execute(
            "INSERT INTO outbox (event_id, created_at, operator_id, messenger_id, phone_number, "
            "identification_code, reason, occurred_at, trace_id) VALUES "
            "(?, '2026-01-01T00:00:00.000000+00:00', 'megafon', 'Not Valid', '+79261234567', "
            "'code', 'contract_ended', '2026-01-01T00:00:00.000000+00:00', 'trace-cli-parked')",
            (event_id,),
        )
    conn.close()
    deadline = time.monotonic() + 30
    while event_id not in (listed := idmesh("registry", "parked", "-o", "megafon")).out:
        assert time.monotonic() < deadline, f"never parked: {listed.out} {listed.err}"
        time.sleep(0.2)
    assert listed.code == 0, listed.err
    [line] = [line for line in listed.out.splitlines() if event_id in line]
    assert "INVALID_ARGUMENT" in line and "trace-cli-parked" in line
    assert "+79261234567" not in listed.out and "+7926*****67" in line
    parked = idmesh("registry", "parked", "-o", "megafon", "--json").json()["notices"]
    assert any(n["event_id"] == event_id for n in parked)

    refused = idmesh("registry", "retry-parked", "-o", "megafon")
    assert refused.code == 1 and refused.err.startswith("error: name the parked notices")
    retried = idmesh("registry", "retry-parked", "-o", "megafon", event_id, "--json")
    assert retried.code == 0, retried.err
    assert retried.json() == {"requeued": 1}
