"""Failpoints: the IDMESH_FAILPOINTS grammar, the actions, and the catalogue kept true."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services.common import failpoints
from services.common.failpoints import CATALOGUE, ENV, Action, parse, term

ROOT = Path(__file__).resolve().parents[2]


def test_terms_parse_to_crash_sleep_and_probability() -> None:
    armed = parse(
        " registry.verify.after_commit , notifier.stream.after_send=25%,"
        "gateway.notice.after_apply=sleep(200),registry.relay.after_publish=50%sleep(10),"
        "notifier.ack.before_commit=crash"
    )
    assert armed == {
        "registry.verify.after_commit": Action(),
        "notifier.stream.after_send": Action(probability=0.25),
        "gateway.notice.after_apply": Action(sleep_ms=200),
        "registry.relay.after_publish": Action(sleep_ms=10, probability=0.5),
        "notifier.ack.before_commit": Action(),
    }
    assert parse("") == {}


@pytest.mark.parametrize(
    "spec",
    [
        "no.such.failpoint",
        "registry.verify.after_commit=",
        "registry.verify.after_commit=explode",
        "registry.verify.after_commit=0%",
        "registry.verify.after_commit=150%",
        "registry.verify.after_commit=sleep(x)",
    ],
)
def test_a_bad_term_is_refused_naming_the_variable(spec: str) -> None:
    with pytest.raises(ValueError, match=ENV):
        parse(spec)


def test_term_is_the_inverse_of_parse() -> None:
    for action in (Action(), Action(sleep_ms=300), Action(probability=0.1, sleep_ms=5)):
        (name, parsed), *_ = parse(term("gateway.verify.after_begin", action)).items()
        assert (name, parsed) == ("gateway.verify.after_begin", action)


def test_unarmed_failpoints_do_nothing_and_a_sleep_stalls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "gateway.notice.after_apply=sleep(50)")
    failpoints.reload()
    try:
        failpoints.failpoint("registry.verify.after_commit")  # not armed: returns
        began = time.monotonic()
        failpoints.failpoint("gateway.notice.after_apply")
        assert time.monotonic() - began >= 0.045
        assert failpoints.armed() == {"gateway.notice.after_apply"}
    finally:
        monkeypatch.delenv(ENV)
        failpoints.reload()
    assert failpoints.armed() == frozenset()


def test_a_crash_exits_137_like_kill_minus_9() -> None:
    code = (
        "from services.common.failpoints import failpoint; failpoint('notifier.ack.before_commit')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={"IDMESH_FAILPOINTS": "notifier.ack.before_commit", "PATH": ""},
        cwd=ROOT,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 137
    assert b'"failpoint.crash"' in done.stderr


def test_every_failpoint_in_the_code_is_catalogued_and_documented() -> None:
    used: set[str] = set()
    for path in (ROOT / "services").rglob("*.py"):
        if path.name == "failpoints.py":
            continue
        used |= set(re.findall(r'failpoint\("([a-z0-9_.]+)"\)', path.read_text()))
    assert used == set(CATALOGUE), f"code vs failpoints.CATALOGUE: {sorted(used ^ set(CATALOGUE))}"
    docs = (ROOT / "docs" / "chaos.md").read_text()
    documented = set(re.findall(r"^\| `([a-z0-9_.]+)` \|", docs, flags=re.MULTILINE))
    assert documented == set(CATALOGUE)


async def test_an_async_sleep_pauses_only_its_coroutine(monkeypatch: pytest.MonkeyPatch) -> None:
    """In a coroutine a sleep stretches the window of that coroutine alone: the rest of the
    process (here another task) goes on meanwhile."""
    monkeypatch.setenv(ENV, "gateway.verify.after_answer=sleep(300)")
    failpoints.reload()
    progressed: list[float] = []

    async def other() -> None:
        for _ in range(5):
            await asyncio.sleep(0.01)  # time passing is what this test measures
            progressed.append(time.monotonic())

    try:
        began = time.monotonic()
        await asyncio.gather(failpoints.async_failpoint("gateway.verify.after_answer"), other())
        ended = time.monotonic()
        await failpoints.async_failpoint("gateway.notice.after_apply")  # not armed
    finally:
        monkeypatch.delenv(ENV)
        failpoints.reload()
    assert ended - began >= 0.29
    assert len(progressed) == 5 and progressed[-1] < began + 0.25
