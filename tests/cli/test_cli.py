"""`idmesh` commands against a running mesh: output, --json, exit codes, refusals."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from services.common.identity import Caller, Kind, Role
from services.localmesh import Mesh
from tests.cli.conftest import fresh_number
from tests.eventually import eventually_sync

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
    [item] = watched.json()  # one JSON document, a list of the items shown
    notice = item["notice"]
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
    assert refused.err.startswith("error: PERMISSION_DENIED (AGREEMENT_MISSING): ")


def test_a_refused_call_prints_one_error_line_and_exits_1(idmesh: Any) -> None:
    refused = idmesh("identify", "start", "-m", "alpha", "-u", _user(), "-p", "+74951234567")
    assert refused.code == 1
    assert refused.out == ""
    assert refused.err.count("\n") == 1
    assert refused.err.startswith("error: INVALID_ARGUMENT (INVALID_PHONE_NUMBER): ")
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
        ["notifier", "watch", "-m", "beta", "--limit", "2", "--timeout", "1"],
        ["policy", "watch", "-m", "beta", "--limit", "2", "--timeout", "1"],
    ],
)
def test_every_command_prints_json_with_json(idmesh: Any, args: list[str]) -> None:
    result = idmesh(*args, "--json")
    json.loads(result.out)  # one JSON document on stdout, whatever the exit code
    assert result.code in (0, 1, 3), result.err
    assert "Traceback" not in result.err


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
    assert (
        done.stderr.startswith("error: NOT_FOUND (SUBSCRIBER_NOT_FOUND): ")
        and done.stderr.count("\n") == 1
    )


def test_without_a_mesh_the_cli_says_how_to_start_one(idmesh: Any, tmp_path: Path) -> None:
    missing = idmesh("status", "--data-dir", str(tmp_path))
    assert missing.code == 1
    assert "make up" in missing.err


def test_times_on_the_command_line_are_dates_or_rfc3339_and_others_are_refused(
    idmesh: Any,
) -> None:
    for since in ("2024-01-01", "2024-01-01T10:00:00+03:00", "2024-01-01T07:00:00Z"):
        listed = idmesh("registry", "audit", "-o", "beeline", "--since", since, "--json")
        assert listed.code == 0, listed.err
        assert isinstance(listed.json()["records"], list)
    naive = idmesh("registry", "audit", "-o", "beeline", "--since", "2024-01-01T10:00:00")
    assert naive.code == 2 and "Traceback" not in naive.err
    assert "argument --since: time '2024-01-01T10:00:00' has no UTC offset" in naive.err
    bad = idmesh(
        "registry",
        "create",
        "-o",
        "beeline",
        "-p",
        fresh_number(),
        "-c",
        "X",
        "--activated-at",
        "01.01.2024",
    )
    assert bad.code == 2 and "argument --activated-at: time '01.01.2024' is not a date" in bad.err


def test_watch_refuses_a_negative_cursor_and_says_when_it_waits(idmesh: Any) -> None:
    negative = idmesh("notifier", "watch", "-m", "beta", "--after", "-5")
    assert negative.code == 2 and "Traceback" not in negative.err
    assert "argument --after: must be 0 to" in negative.err

    head = int(idmesh("notifier", "status", "-m", "beta", "--json").json()["head_seq"])
    waited = idmesh(
        "notifier", "watch", "-m", "beta", "--after", str(head), "--limit", "1", "--timeout", "1"
    )
    assert waited.code == 1  # the limit was not reached
    assert waited.out == ""
    assert f"0 event(s) after seq {head} so far" in waited.err
    assert "waiting for new ones for at most 1s" in waited.err
    assert "stopped after 0 of 1 items" in waited.err


def test_zero_values_are_printed_and_the_status_shows_the_24_hour_limit(idmesh: Any) -> None:
    status = idmesh("notifier", "status", "-m", "beta", "--json").json()
    assert status["delivery_limit"] == "86400s"
    assert {"head_seq", "acked_seq", "unacked_count", "late_deliveries"} <= status.keys()
    text = idmesh("notifier", "status", "-m", "beta")
    assert "delivery_limit: 86400s" in text.out
    assert "late_deliveries: 0" in text.out  # a zero is printed, not left out
    unknown = idmesh("access", "-m", "beta", "-u", _user(), "--json")
    assert unknown.code == 3 and unknown.json()["allowed"] is False


def test_cert_and_key_without_ca_use_the_mesh_ca(idmesh: Any, cli_mesh: Mesh) -> None:
    files = cli_mesh.credentials(Caller(Kind.MESSENGER, "alpha", Role.FRONTEND))
    assert files is not None
    given = ["--cert", str(files.cert), "--key", str(files.key)]
    allowed = idmesh("access", "-m", "alpha", "-u", _user(), *given)
    assert allowed.code == 3, allowed.err  # the call went through: the user is not identified
    half = idmesh("access", "-m", "alpha", "-u", _user(), "--cert", str(files.cert))
    assert half.code == 1 and half.err.startswith("error: give both --cert and --key")


def test_verify_says_that_it_binds_the_messenger(idmesh: Any) -> None:
    helptext = idmesh("registry", "verify", "--help")
    assert helptext.code == 0
    words = " ".join(helptext.out.split())
    assert "Not a dry run" in words and "mints (or returns) the pair's identification code" in words
    phone = fresh_number()
    idmesh("registry", "create", "-o", "beeline", "-p", phone, "-c", f"V-{uuid.uuid4().hex[:8]}")
    verified = idmesh("registry", "verify", "-o", "beeline", "-p", phone, "--as-messenger", "beta")
    assert verified.code == 0, verified.err
    assert "result: VERIFICATION_RESULT_IDENTIFIED" in verified.out
    assert "note: the subscriber is now bound to this messenger at beeline" in verified.err
    bound = idmesh("registry", "get", "-o", "beeline", "-p", phone, "--json").json()
    assert [b["messenger_id"] for b in bound["subscriber"]["bindings"]] == ["beta"]


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

    def parked_listed() -> Any:
        listed = idmesh("registry", "parked", "-o", "megafon")
        return listed if event_id in listed.out else None

    listed = eventually_sync(parked_listed, within=30, what="the relay to park the notice")
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
