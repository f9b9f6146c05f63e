"""A client built on the v1 API as first published works against today's mesh.

The Python code of that version is generated at test time from protos/baseline/v1.binpb (the
image `buf breaking` checks against) into a temporary folder, and tests/integration/
first_v1_client.py runs with it in a process of its own (two versions of one proto cannot share
a process): it identifies a user, watches the notice stream while the operator ends the contract,
verifies under the first name of the idempotency key, and runs both imports as that version
documented them.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from services.common.identity import Caller, Kind, Role
from services.localmesh.mesh import Mesh
from tools.gen_protos import generate

pytestmark = pytest.mark.mesh

ROOT = Path(__file__).resolve().parents[2]
BASELINE = ROOT / "protos" / "baseline" / "v1.binpb"
CLIENT = Path(__file__).with_name("first_v1_client.py")
MESSENGER, OPERATOR = "alpha", "beeline"


@pytest.fixture(scope="module")
def v1_code(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("first-v1-code")
    generate(out, image=BASELINE)
    return out


def number(prefix: str) -> str:
    return f"{prefix}{random.randrange(10**6, 10**7):07d}"


def tls(mesh: Mesh, identity: Caller) -> dict[str, str]:
    files = mesh.credentials(identity)
    assert files is not None, "the mesh runs with mutual TLS"
    return {"ca": str(files.ca), "cert": str(files.cert), "key": str(files.key)}


def run_first_v1_client(mesh: Mesh, code: Path) -> dict[str, Any]:
    suffix = uuid.uuid4().hex[:8]
    params = {
        "messenger": MESSENGER,
        "addresses": {
            "gateway": mesh.address(f"gateway-{MESSENGER}"),
            "registry": mesh.address(f"registry-{OPERATOR}"),
            "notifier": mesh.address("notifier"),
        },
        "tls": {
            "frontend": tls(mesh, Caller(Kind.MESSENGER, MESSENGER, Role.FRONTEND)),
            "gateway_admin": tls(mesh, Caller(Kind.MESSENGER, MESSENGER, Role.ADMIN)),
            "messenger": tls(mesh, Caller(Kind.MESSENGER, MESSENGER)),
            "operator_admin": tls(mesh, Caller(Kind.OPERATOR, OPERATOR, Role.ADMIN)),
        },
        "sms_outbox": mesh.services[f"gateway-{MESSENGER}"].info["sms_outbox"],
        "user": f"v1-user-{suffix}",
        "phone": number("+7903"),
        "contract": f"V1-{suffix}",
        "other_phone": number("+7903"),
        "other_contract": f"V1-other-{suffix}",
        "ported_phone": number("+7916"),
        "imported_phone": number("+7903"),
        "imported_contract": f"V1-import-{suffix}",
    }
    # Only the v1 code in front of the path: nothing of today's generated code is importable
    # before it (the script checks where its code came from, below).
    env = {**os.environ, "PYTHONPATH": str(code)}
    done = subprocess.run(
        [sys.executable, str(CLIENT), json.dumps(params)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    seen: dict[str, Any] = json.loads(done.stdout)
    seen["params"] = params
    return seen


@pytest.fixture(scope="module")
def seen(mesh: Mesh, v1_code: Path) -> dict[str, Any]:
    return run_first_v1_client(mesh, v1_code)


def test_the_client_runs_on_the_first_v1_code(seen: dict[str, Any], v1_code: Path) -> None:
    assert Path(seen["code_files"]["notifier_pb2"]).is_relative_to(v1_code)


def test_a_first_v1_client_identifies_a_user(seen: dict[str, Any]) -> None:
    assert seen["identification"] == {
        "state": "IDENTIFICATION_STATE_IDENTIFIED",
        "operator_id": OPERATOR,
        "allowed": True,
    }


def test_a_first_v1_consumer_receives_the_termination_in_notice(seen: dict[str, Any]) -> None:
    """The stream as first published: the notice in `notice`, never a message with no kind
    (which that consumer reads as a progress mark, and so misses the termination)."""
    params, stream = seen["params"], seen["stream"]
    assert seen["termination"] == {"notices_queued": 1}
    assert None not in stream["kinds"], stream["kinds"]
    assert stream["kinds"][-1] == "notice"
    notice = stream["notice"]
    assert notice is not None
    assert notice["seq"] == stream["head_before"] + 1
    assert (notice["phone_number"], notice["messenger_id"]) == (params["phone"], MESSENGER)
    assert notice["identification_code"] == seen["revocation"]["identification_code"]


def test_the_termination_revokes_the_user_for_a_first_v1_client(seen: dict[str, Any]) -> None:
    assert seen["revocation"]["state"] == "IDENTIFICATION_STATE_REVOKED"
    assert seen["revocation"]["allowed"] is False


def test_verify_subscriber_takes_the_key_as_request_id(seen: dict[str, Any]) -> None:
    """A repeat returns the first answer; the key for another number is refused and audited,
    and the audit filter finds it under the outcome's first name."""
    key = f"v1-{seen['params']['user']}"
    assert seen["verify"] == {
        "results": ["VERIFICATION_RESULT_IDENTIFIED"] * 2,
        "same_code": True,
        "reused": "INVALID_ARGUMENT",
        "audited_request_ids": [key, key, key],  # newest first: the reuse, then the two answers
        "audited_reuses": [key],  # found by the outcome's first name
    }


def test_a_ported_numbers_import_that_sets_nothing_commits_the_valid_rows(
    seen: dict[str, Any],
) -> None:
    assert seen["import_ported"] == {
        "imported": 1,
        "rejected": 1,
        "committed": True,
        "error_lines": [3],
        "route": ["megafon", "ROUTE_SOURCE_PORTED_NUMBERS"],
    }


def test_a_subscribers_import_keeps_the_first_v1_modes(seen: dict[str, Any]) -> None:
    """ImportSubscribers: unspecified was all or nothing in the first v1, and still is."""
    assert seen["import_subscribers"] == {
        "unset": {"imported": 0, "rejected": 1, "committed": False, "error_lines": [3]},
        "valid_rows": {"imported": 1, "rejected": 1, "committed": True, "error_lines": [3]},
    }
