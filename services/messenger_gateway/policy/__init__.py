"""The delivery policy: rules as data, the in-memory index, the use cases and the store port."""
