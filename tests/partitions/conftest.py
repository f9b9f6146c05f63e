"""Hosts of their own on a bridge (network namespaces): needs `ip netns add`, which root has."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from services.localmesh.netns import Network


@pytest.fixture
def network() -> Iterator[Network]:
    why = Network.available()
    if why is not None:
        pytest.skip(why)
    with Network.create() as net:
        yield net
