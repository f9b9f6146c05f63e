"""The adapters: the SQLite and PostgreSQL stores, the SMS outbox, the registries' clients."""
