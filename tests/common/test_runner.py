"""The event loop a service runs on: IDMESH_EVENT_LOOP, uvloop where installed."""

from __future__ import annotations

import asyncio
import importlib.util

import pytest

from services.common.config import ConfigError, Env
from services.common.runner import event_loop_name, run_loop

HAS_UVLOOP = importlib.util.find_spec("uvloop") is not None


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_asyncio_is_chosen_when_asked_for() -> None:
    env = Env({"IDMESH_EVENT_LOOP": "asyncio"})
    assert event_loop_name(env) == "asyncio"
    assert run_loop(_loop_module(), "asyncio").startswith("asyncio")


def test_auto_takes_uvloop_exactly_when_it_is_installed() -> None:
    assert event_loop_name(Env({})) == ("uvloop" if HAS_UVLOOP else "asyncio")


@pytest.mark.skipif(not HAS_UVLOOP, reason="uvloop is not installed (the fast extra)")
def test_uvloop_runs_the_service_on_uvloop() -> None:
    env = Env({"IDMESH_EVENT_LOOP": "uvloop"})
    assert run_loop(_loop_module(), event_loop_name(env)).startswith("uvloop")


def test_an_unknown_event_loop_is_refused_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match="IDMESH_EVENT_LOOP: expected one of"):
        event_loop_name(Env({"IDMESH_EVENT_LOOP": "trio"}))
