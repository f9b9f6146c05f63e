"""Secret keys kept in files of their own (mode 0600), outside the databases they protect."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path


def load_or_create_key(path: Path, *, size: int = 32) -> bytes:
    """The key in path; created with `size` random bytes (owner-only) if the file is missing.
    The key is written to a temporary file and linked into place, so processes starting
    together (replicas sharing a data folder) all end up with the one key, never a partial one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(secrets.token_bytes(size))
            with contextlib.suppress(FileExistsError):  # another process won: use its key
                os.link(tmp, path)
        finally:
            tmp.unlink()
    key = path.read_bytes()
    if len(key) < 16:
        raise ValueError(f"key file {path} holds {len(key)} bytes; at least 16 are needed")
    return key
