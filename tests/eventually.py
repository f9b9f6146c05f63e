"""The tests' bounded wait: services.localmesh.eventually (written there once, for the local
mesh's clients and for any project's tests), under the import path the tests use."""

from services.localmesh.eventually import DEFAULT_WITHIN, eventually, eventually_sync

__all__ = ["DEFAULT_WITHIN", "eventually", "eventually_sync"]
