"""What a person at the terminal sees: waits that are announced and bounded, --json as one
document, refusals in the CLI's own words (the command to run, not the API method), a bad
certificate named plainly, and a reference that lists every command once."""

from __future__ import annotations

import argparse
import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest

from services.cli import main as cli
from services.cli.command import commands_by_method
from services.cli.output import in_cli_words
from services.common.identity import Caller, Kind, Role
from services.localmesh import Mesh

pytestmark = pytest.mark.mesh

REPO = Path(__file__).resolve().parents[2]


def test_policy_watch_says_it_waits_and_stops_at_its_timeout(idmesh: Any) -> None:
    short = idmesh(
        *("policy", "watch", "-m", "beta", "--after", "999999"),
        *("--limit", "1", "--timeout", "1"),
    )
    assert short.code == 1  # the limit was not reached
    assert short.out == ""
    assert "0 change(s) after version 999999 so far" in short.err
    assert "waiting for new ones for at most 1s without one" in short.err
    assert "stopped after 0 of 1 changes" in short.err
    unbounded = idmesh("policy", "watch", "-m", "beta", "--after", "999999", "--timeout", "1")
    assert unbounded.code == 0, unbounded.err  # no limit: the timeout is the way it ends
    negative = idmesh("policy", "watch", "-m", "beta", "--limit", "-1")
    assert negative.code == 2 and "argument --limit: must be 0 to" in negative.err


def test_policy_watch_json_is_one_array_of_the_changes(idmesh: Any) -> None:
    user = f"w-{uuid.uuid4().hex[:8]}"
    head = int(
        idmesh("policy", "check", "-m", "beta", "--from", "x", "--to", "y", "--json").json()[
            "version"
        ]
    )
    idmesh("identify", "start", "-m", "beta", "-u", user, "-p", "+79031234567")  # one change
    watched = idmesh(
        *("policy", "watch", "-m", "beta", "--after", str(head)),
        *("--limit", "1", "--timeout", "20", "--json"),
    )
    assert watched.code == 0, watched.err
    changes = json.loads(watched.out)  # the whole output is one document
    assert [c["user_id"] for c in changes] == [user]
    assert [c["value"] for c in changes] == ["AWAITING_CODE"]
    nothing = idmesh(
        "policy", "watch", "-m", "beta", "--after", "999999", "--timeout", "1", "--json"
    )
    assert json.loads(nothing.out) == []


def test_a_refusal_names_the_cli_command_not_the_api_method(idmesh: Any) -> None:
    refused = idmesh("identify", "show", "-m", "alpha", "-u", f"nobody-{uuid.uuid4().hex[:6]}")
    assert refused.code == 1
    assert "start one with `idmesh identify start`" in refused.err
    assert "StartIdentification" not in refused.err


def test_every_api_method_a_command_calls_maps_to_that_command() -> None:
    commands = commands_by_method(cli.build_parser())
    assert commands["StartIdentification"] == "idmesh identify start"
    assert commands["GetIdentification"] == "idmesh identify show"
    assert commands["ListRestrictionOrders"] == "idmesh policy order list"
    assert commands["TerminateContract"] == "idmesh registry terminate"
    text = "rebuild the cache (ListPreferences, ListRestrictionOrders); StartIdentificationX"
    assert in_cli_words(text, commands) == (
        "rebuild the cache (`idmesh policy show`, `idmesh policy order list`); "
        "StartIdentificationX"  # a longer word is not a method name
    )


def test_a_bad_certificate_is_named_plainly(idmesh: Any, cli_mesh: Mesh, tmp_path: Path) -> None:
    files = cli_mesh.credentials(Caller(Kind.MESSENGER, "alpha", Role.FRONTEND))
    assert files is not None
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    cases = {
        (
            "--cert",
            str(garbage),
            "--key",
            str(files.key),
        ): f"--cert {garbage}: not a PEM certificate",
        ("--cert", str(tmp_path / "none.pem"), "--key", str(files.key)): (
            f"--cert {tmp_path / 'none.pem'}: no such file"
        ),
        ("--cert", str(files.cert), "--key", str(files.cert)): (
            f"--key {files.cert}: not a PEM private key without a password"
        ),
        ("--cert", str(files.cert), "--key", str(files.key), "--ca", str(tmp_path)): (
            f"--ca {tmp_path}: a folder, not a file"
        ),
    }
    for given, message in cases.items():
        refused = idmesh("access", "-m", "alpha", "-u", "u1", *given)
        assert refused.code == 1
        assert refused.err == f"error: {message}\n"
        assert refused.out == ""


def _documented(text: str) -> list[str]:
    """The commands named in the first cell of docs/cli.md's table rows, alternatives expanded
    (`policy accept|refuse|clear`), a second name in a cell taken relative to the first."""
    found: list[str] = []
    for row in text.splitlines():
        if not row.startswith("| `"):
            continue
        cell = row.split(" | ")[0]
        base: list[str] | None = None
        for code in re.findall(r"`([^`]+)`", cell):
            words = code.split()
            if words[0] == "idmesh":
                words = words[1:]
                relative = False
            elif base is not None:
                relative = True
            else:
                continue
            name: list[str] = []
            for word in words:
                if word.startswith(("-", "[", "(")) or word.isupper():
                    break
                name.append(word)
            if not name:
                continue
            if relative and base is not None:
                name = base[: len(base) - len(name)] + name
            base = name
            *group, last = name
            for alternative in last.replace("\\|", "|").split("|"):
                found.append(" ".join(["idmesh", *group, alternative]))
    return found


def _leaves(parser: argparse.ArgumentParser) -> list[str]:
    leaves: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                if child.get_default("func") is not None:
                    leaves.append(child.prog)
                leaves += _leaves(child)
    return leaves


def test_the_cli_reference_lists_every_command_once() -> None:
    documented = _documented((REPO / "docs" / "cli.md").read_text(encoding="utf-8"))
    duplicates = {c for c in documented if documented.count(c) > 1}
    assert not duplicates, f"listed more than once: {sorted(duplicates)}"
    assert sorted(documented) == sorted(_leaves(cli.build_parser()))
