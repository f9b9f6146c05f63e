"""Per-request context carried across hops: the request id.

The server interceptor sets it from the incoming metadata (or a new one); outbound channels
(services.common.channels) send it on, so one request id follows a request through the mesh.
"""

from __future__ import annotations

import re
import uuid
from contextvars import ContextVar

REQUEST_ID_METADATA_KEY = "x-request-id"
_VALID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

_request_id: ContextVar[str | None] = ContextVar("idmesh_request_id", default=None)


def new_request_id() -> str:
    return uuid.uuid4().hex


def accept_request_id(value: str | None) -> str:
    """The caller's request id if it is well formed, else a new one."""
    return value if value and _VALID.match(value) else new_request_id()


def set_request_id(value: str | None) -> None:
    _request_id.set(value)


def current_request_id() -> str | None:
    return _request_id.get()
