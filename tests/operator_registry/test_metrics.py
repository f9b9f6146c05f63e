"""The registry's metrics: the outbox backlog read from the store, verification answers."""

from __future__ import annotations

from prometheus_client import REGISTRY

from services.operator_registry.service import RegistryService

from .conftest import NUMBER, FakeClock


async def test_the_outbox_backlog_is_read_from_the_store(
    service: RegistryService, clock: FakeClock
) -> None:
    """The source of idmesh_registry_outbox_pending and ..._oldest_pending_age_seconds."""
    assert await service.outbox_backlog() == (0, 0.0)
    await service.register_messenger("alpha")
    await service.create_subscriber(NUMBER, "C-backlog")
    await service.verify_subscriber("alpha", "r-backlog", NUMBER, time_remaining=None)
    await service.terminate_contract(NUMBER)
    clock.advance(90)
    assert await service.outbox_backlog() == (1, 90.0)


async def test_verification_answers_are_counted_by_messenger_and_result(
    service: RegistryService,
) -> None:
    def count(result: str) -> float:
        labels = {"messenger_id": "alpha", "result": result}
        return REGISTRY.get_sample_value("idmesh_registry_verifications_total", labels) or 0.0

    identified, none = count("identified"), count("no_subscriber")
    await service.register_messenger("alpha")
    await service.create_subscriber(NUMBER, "C-count")
    await service.verify_subscriber("alpha", "r-1", NUMBER, time_remaining=None)
    await service.verify_subscriber("alpha", "r-1", NUMBER, time_remaining=None)  # a replay
    await service.verify_subscriber("alpha", "r-2", "+79051112299", time_remaining=None)
    assert (count("identified"), count("no_subscriber")) == (identified + 1, none + 1)
