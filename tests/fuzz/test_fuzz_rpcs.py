"""Every RPC of the three services, fuzzed with requests generated from the proto descriptors
(tests/fuzz/strategies.py), over real servers (tests/fuzz/harness.py):

- no request is answered INTERNAL or UNKNOWN: bad input is the caller's INVALID_ARGUMENT (or
  another documented refusal), checked at the edge;
- a refused request (any status but OK) changes nothing in the answering service's store: every
  table is dumped before and after the call and compared (the few refusals that are meant to
  write something are listed below, each with its reason).

The number of examples per RPC comes from the hypothesis profile (tests/conftest.py): `ci`, the
default, derandomized so that every run sends the same requests; `--hypothesis-profile=thorough`
for thousands of random ones. A failure prints the method, the caller and the request.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import grpc
import pytest
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.common.identity import Caller
from tests.fuzz.harness import (
    OTHER_IDENTITIES,
    Mesh,
    changed_tables,
    method_id,
    methods,
    right_identity,
    server_of,
)
from tests.fuzz.strategies import message_strategy

pytestmark = pytest.mark.asyncio(loop_scope="module")

MAX_STREAM_MESSAGES = 3

# Tables an RPC writes whatever its outcome: neither read nor compared for it.
WRITES_WHATEVER_THE_OUTCOME: dict[str, frozenset[str]] = {
    # Every verification request is audited, refused or not (operator_registry service).
    "RegistryService.VerifySubscriber": frozenset({"audit_log"}),
}
# Refusals that write by design: (status codes, tables they may change).
REFUSALS_THAT_WRITE: dict[str, tuple[frozenset[grpc.StatusCode], frozenset[str]]] = {
    # A wrong code counts against the identification's attempts (and the last one ends it); an
    # expired code ends it: both are refused FAILED_PRECONDITION.
    "GatewayService.ConfirmPossession": (
        frozenset({grpc.StatusCode.FAILED_PRECONDITION}),
        frozenset({"identifications"}),
    ),
}


_cases: dict[tuple[int, str], st.SearchStrategy[tuple[list[Message], Caller]]] = {}


def cases(
    method: MethodDescriptor, hints: Mapping[str, Sequence[str]]
) -> st.SearchStrategy[tuple[list[Message], Caller]]:
    """(the request (a list of one) or the stream of requests, the caller) of an RPC; built
    once per mesh (a strategy is costly to build and validate, cheap to draw from)."""
    key = (id(hints), method.full_name)
    if key not in _cases:
        one = message_strategy(method.input_type, hints)
        requests = (
            st.lists(one, max_size=MAX_STREAM_MESSAGES)
            if method.client_streaming
            else st.lists(one, min_size=1, max_size=1)
        )
        _cases[key] = st.tuples(requests, callers(method))
    return _cases[key]


def callers(method: MethodDescriptor) -> st.SearchStrategy[Caller]:
    """Mostly the caller the RPC is for (to get past authorization), sometimes another."""
    right = st.just(right_identity(method))
    return st.one_of(right, right, right, st.sampled_from(OTHER_IDENTITIES))


@pytest.mark.timeout(600)  # a failure is shrunk to a small example: minutes on a loaded machine
@pytest.mark.parametrize("method", methods(), ids=method_id)
@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
async def test_no_internal_error_and_a_refusal_changes_nothing(
    mesh: Mesh, method: MethodDescriptor, data: st.DataObject
) -> None:
    name = method_id(method)
    requests, caller = data.draw(cases(method, mesh.hints), label="requests, caller")
    server = server_of(method)
    skip = WRITES_WHATEVER_THE_OUTCOME.get(name, frozenset())
    before = mesh.snapshot(server, skip)
    outcome = await mesh.call(method, requests, caller)
    assert outcome.client_side or outcome.code not in (
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
    ), f"{name} answered {outcome.code.name}: {outcome.details}"
    if outcome.code is grpc.StatusCode.OK:
        return
    changed = changed_tables(before, mesh.snapshot(server, skip))
    codes, may_change = REFUSALS_THAT_WRITE.get(name, (frozenset(), frozenset()))
    if outcome.code in codes:
        changed = [table for table in changed if table not in may_change]
    assert not changed, (
        f"{name} refused {outcome.code.name} ({outcome.details[:200]}) but changed {changed}"
    )
