"""Every metric the alerting rules and the dashboard of deploy/monitoring read is one that the
services of a running mesh export (a renamed metric would leave an alert that never fires)."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.localmesh import Mesh
from tests.deploy.test_monitoring import gen_monitoring

pytestmark = pytest.mark.mesh

# The series names a family of each type is exposed as.
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("_sum", "_count", "_created", ""),
    "info": ("_info",),
    "unknown": ("",),
}


def exported(text: str) -> set[str]:
    """Series names a scrape exposes, also for families without a sample yet (a labelled
    counter nothing has incremented still has its TYPE line)."""
    return {
        family.name + suffix
        for family in text_string_to_metric_families(text)
        for suffix in SUFFIXES[family.type]
    }


def scrape_text(address: str) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
        return str(response.read().decode())


async def test_every_metric_the_alerts_and_the_dashboard_read_is_exported(mesh: Mesh) -> None:
    names: set[str] = set()
    for service in mesh.services:
        text = await asyncio.to_thread(scrape_text, mesh.metrics_address(service))
        names |= exported(text)
    wanted = gen_monitoring().metric_names()
    assert len(wanted) > 25
    missing = sorted(wanted - names)
    assert not missing, f"deploy/monitoring reads metrics no service exports: {missing}"
