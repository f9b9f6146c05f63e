"""Every process of a running mesh serves Prometheus metrics (mesh.json records where), and after
an identification and a termination the key series are there with plausible values, also after a
restart."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Callable

import pytest
from idmesh.gateway.v1 import gateway_pb2
from idmesh.registry.v1 import registry_pb2
from prometheus_client.parser import text_string_to_metric_families

from services.localmesh import Mesh, MeshClient, load_layout
from tests.eventually import eventually
from tests.integration.test_identification import new_subscriber, user

pytestmark = pytest.mark.mesh

State = gateway_pb2.IdentificationState
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(address: str) -> Samples:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def scraped_until(
    mesh: Mesh, service: str, condition: Callable[[Samples], bool], timeout: float = 30
) -> Samples:
    """Scrape until condition holds (bounded); the last scrape."""

    async def scraped() -> Samples | None:
        samples = await asyncio.to_thread(scrape, mesh.metrics_address(service))
        return samples if condition(samples) else None

    result: Samples = await eventually(
        scraped, within=timeout, what=f"{service}'s metrics to meet the condition"
    )
    return result


def test_every_process_has_a_metrics_address_in_the_mesh_file(mesh: Mesh) -> None:
    layout = load_layout(mesh.data_dir)
    addresses = {name: info["metrics"] for name, info in layout.items()}
    assert set(addresses) == set(mesh.services)
    assert len(set(addresses.values())) == len(addresses)
    for address in addresses.values():
        assert any(name.startswith("idmesh_rpc_") for name, _ in scrape(address))


def delta(after: Samples, before: Samples, name: str, **labels: str) -> float:
    """How much a series grew between two scrapes (a series not there yet counts as 0)."""
    return (value(after, name, **labels) or 0) - (value(before, name, **labels) or 0)


async def scrape_now(mesh: Mesh, service: str) -> Samples:
    return await asyncio.to_thread(scrape, mesh.metrics_address(service))


async def test_identification_and_termination_show_in_the_metrics(
    mesh: Mesh, client: MeshClient
) -> None:
    """The mesh is shared with the module's other tests: each counter must have grown by what
    this test's one identification and one termination caused, no more and no less."""
    phone = await new_subscriber(client, "beeline", "+7903")
    before = {
        name: await scrape_now(mesh, name)
        for name in ("registry-beeline", "notifier", "gateway-alpha")
    }
    done = await client.identify("alpha", user(), phone)
    assert done.state == State.IDENTIFICATION_STATE_IDENTIFIED
    await client.registry_admin("beeline").TerminateContract(
        registry_pb2.TerminateContractRequest(phone_number=phone), timeout=5
    )

    verify = "/idmesh.registry.v1.RegistryService/VerifySubscriber"
    was = before["registry-beeline"]
    registry = await scraped_until(
        mesh,
        "registry-beeline",
        lambda s: (
            delta(s, was, "idmesh_registry_relay_published_events_total") == 1
            and value(s, "idmesh_registry_outbox_pending") == 0
        ),
    )
    assert delta(registry, was, "idmesh_rpc_requests_total", method=verify, code="OK") == 1
    assert (
        delta(
            registry,
            was,
            "idmesh_registry_verifications_total",
            messenger_id="alpha",
            result="identified",
        )
        == 1
    )
    assert value(registry, "idmesh_registry_outbox_oldest_pending_age_seconds") == 0
    assert value(registry, "idmesh_registry_outbox_parked") == 0  # the alert's gauge

    was = before["notifier"]
    head = value(was, "idmesh_notifier_head_seq", messenger_id="alpha") or 0
    notifier = await scraped_until(
        mesh,
        "notifier",
        lambda s: (
            value(s, "idmesh_notifier_head_seq", messenger_id="alpha") == head + 1
            and value(s, "idmesh_notifier_acked_seq", messenger_id="alpha") == head + 1
        ),
    )
    assert value(notifier, "idmesh_notifier_unacked_events", messenger_id="alpha") == 0
    assert value(notifier, "idmesh_notifier_oldest_unacked_age_seconds", messenger_id="alpha") == 0
    assert value(notifier, "idmesh_notifier_late_deliveries_total", messenger_id="alpha") == 0
    assert value(notifier, "idmesh_notifier_sla_limit_seconds") == 86_400
    assert delta(notifier, was, "idmesh_notifier_published_events_total", result="accepted") == 1
    assert delta(notifier, was, "idmesh_notifier_published_events_total", result="duplicate") == 0
    # one stream per gateway process: the lease holder of each messenger
    assert value(notifier, "idmesh_notifier_open_streams") == len(mesh.spec.messengers)

    was = before["gateway-alpha"]
    gateway = await scraped_until(
        mesh,
        "gateway-alpha",
        lambda s: (
            delta(
                s, was, "idmesh_gateway_identifications_revoked_total", reason="contract_terminated"
            )
            == 1
            and value(s, "idmesh_gateway_notice_stream_lag") == 0
        ),
    )
    confirm = "/idmesh.gateway.v1.GatewayService/ConfirmPossession"
    assert delta(gateway, was, "idmesh_rpc_requests_total", method=confirm, code="OK") == 1
    assert (
        delta(gateway, was, "idmesh_gateway_identifications_started_total", operator_id="beeline")
        == 1
    )
    identified = delta(
        gateway,
        was,
        "idmesh_gateway_identifications_completed_total",
        outcome="identified",
        reason="none",
    )
    assert identified == 1
    assert delta(gateway, was, "idmesh_gateway_verification_duration_seconds_count") == 1
    assert delta(gateway, was, "idmesh_gateway_notice_cursor") == 1
    assert value(gateway, "idmesh_gateway_pending_verifications") == 0
    assert value(gateway, "idmesh_gateway_verifications_running") == 0
    assert value(gateway, "idmesh_gateway_verification_window_seconds") == 30
    # the one replica holds the notice consumer's lease (labelled with its replica id)
    held = [
        sample
        for (name, labels), sample in gateway.items()
        if name == "idmesh_lease_held" and ("lease", "notices:alpha") in labels
    ]
    assert held == [1]


async def test_an_operator_timeout_is_counted_by_reason(mesh: Mesh, client: MeshClient) -> None:
    """gamma routes T2 numbers (+7900...) to an operator that never answers; its window is
    short."""
    timeouts = {"outcome": "not_completed", "reason": "operator_timeout"}
    before = await scrape_now(mesh, "gateway-gamma")
    u = user()
    started = await client.start("gamma", u, "+79001234567")
    await client.confirm_pending("gamma", started)
    await client.wait_state("gamma", u, {State.IDENTIFICATION_STATE_NOT_COMPLETED})
    gateway = await scraped_until(
        mesh, "gateway-gamma", lambda s: value(s, "idmesh_gateway_pending_verifications") == 0
    )
    assert delta(gateway, before, "idmesh_gateway_identifications_completed_total", **timeouts) == 1


async def test_the_notifier_gauges_come_from_the_store_after_a_restart(
    mesh: Mesh, client: MeshClient
) -> None:
    before = await scraped_until(
        mesh,
        "notifier",
        lambda s: value(s, "idmesh_notifier_head_seq", messenger_id="alpha") is not None,
    )
    head = value(before, "idmesh_notifier_head_seq", messenger_id="alpha")
    await asyncio.to_thread(mesh.restart, "notifier")
    after = await asyncio.to_thread(scrape, mesh.metrics_address("notifier"))
    assert value(after, "idmesh_notifier_head_seq", messenger_id="alpha") == head
    assert value(after, "idmesh_notifier_acked_seq", messenger_id="alpha") == head
