"""Every RPC of the three services while their stores cannot grow (the disk under their SQLite
files is full): no call is answered INTERNAL or UNKNOWN, and a call the store refused is
UNAVAILABLE with reason STORE_UNAVAILABLE and a RetryInfo. Requests come from the same
descriptor-driven strategies as the fuzz test (tests/fuzz/strategies.py), with the callers each
RPC is for, so most of them get past validation to the store."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from google.protobuf.descriptor import MethodDescriptor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.harness import Mesh, method_id, methods, right_identity, running_mesh
from tests.fuzz.strategies import message_strategy
from tests.fuzz.test_fuzz_rpcs import MAX_STREAM_MESSAGES

pytestmark = pytest.mark.asyncio(loop_scope="module")

# What the calls of this module answered, by (method, code, reason): checked at the end.
ANSWERS: Counter[tuple[str, str, str]] = Counter()
STORES = ("registry.db", "notifier.db", "gateway.db")


@pytest.fixture(scope="module")
def small_disk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A 16 MB tmpfs for the stores (the machine's tests run as root, CI included)."""
    mount = tmp_path_factory.mktemp("disk")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def mesh(tmp_path_factory: pytest.TempPathFactory, small_disk: Path) -> AsyncIterator[Mesh]:
    """The in-process mesh, its SQLite files (and their WAL) on the small disk, which is filled
    once the mesh is seeded."""
    folder = tmp_path_factory.mktemp("mesh")
    for name in STORES:
        (folder / name).symlink_to(small_disk / name)  # SQLite follows: -wal sits beside it
    async with running_mesh(folder) as running:
        with (small_disk / "filler").open("wb") as out, contextlib.suppress(OSError):
            while True:  # every free block taken
                out.write(b"\0" * (1 << 20))
                out.flush()
                os.fsync(out.fileno())
        yield running


@pytest.mark.timeout(600)
@pytest.mark.parametrize("method", methods(), ids=method_id)
@settings(
    max_examples=10,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
async def test_no_rpc_answers_internal_when_its_store_cannot_be_written(
    mesh: Mesh, method: MethodDescriptor, data: st.DataObject
) -> None:
    one = message_strategy(method.input_type, mesh.hints)
    requests = data.draw(
        st.lists(one, min_size=1, max_size=MAX_STREAM_MESSAGES if method.client_streaming else 1),
        label="requests",
    )
    outcome = await mesh.call(method, requests, right_identity(method))
    name = method_id(method)
    assert outcome.client_side or outcome.code not in (
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
    ), f"{name} answered {outcome.code.name} on a full disk: {outcome.details}"
    error = outcome.error
    reason = error.reason if error is not None else ""
    if reason == "STORE_UNAVAILABLE":
        assert outcome.code is grpc.StatusCode.UNAVAILABLE, name
        assert error is not None and error.retry_delay is not None, name
    ANSWERS[(name, outcome.code.name, reason)] += 1


async def test_some_calls_reached_the_stores_and_were_refused_store_unavailable() -> None:
    """The test above cannot pass by never touching the stores: some writes were refused so.
    (Not every write is: SQLite reuses the WAL's pages after a checkpoint, so a small write
    may still fit on the full disk.)"""
    if not ANSWERS:
        pytest.skip("it checks what the per-RPC test of this module saw, and that did not run")
    refused = sorted(name for (name, _code, reason) in ANSWERS if reason == "STORE_UNAVAILABLE")
    assert refused, sorted(ANSWERS)
