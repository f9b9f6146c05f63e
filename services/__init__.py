"""idmesh services: operator_registry, notifier, messenger_gateway, and what they share (common)."""
