"""Structured logs with structlog: JSON lines (console rendering on a terminal).

Request context (request id, method, caller) is merged from structlog.contextvars, which the
server interceptor binds per RPC. Two guards keep secrets out of every line: values under secret
keys are dropped, and phone numbers are masked: whole under a phone key (`phone`,
`phone_number`, ...), and in any other text by a pattern of the Russian number forms that
cannot match inside an id. Ids (`request_id`, `trace_id`, `event_id`, any `*_id`) are never
changed, so a log can be searched for them.

Every RPC writes a line (the server interceptor's canonical one), so the JSON path is kept cheap:
the line is serialized once by orjson and written as bytes (structlog's BytesLogger, one write
and flush per line), and the timestamp is formatted from a per-second cache.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import MutableMapping
from typing import Any

import orjson
import structlog

from services.common.phone import mask

SECRET_KEYS = frozenset(
    {"code", "otp", "identification_code", "secret", "password", "key", "private_key", "token"}
)
# Values under these keys are phone numbers: masked whole, whatever their form.
PHONE_KEYS = frozenset({"phone", "phone_number", "number", "msisdn", "old_phone", "new_phone"})
# Values under these keys are never searched for numbers: ids (any key named `id` or ending in
# `_id`, and the idempotency key) and what structlog or the interceptor add.
_UNTOUCHED_KEYS = frozenset(
    {"idempotency_key", "timestamp", "level", "service", "method", "caller", "status", "logger"}
)
# A phone number in free text: + and 7 to 15 digits (the E.164 forms, spaces, dashes and
# brackets allowed between digits), wherever it stands (no id has a '+': request ids are letters,
# digits and . _ : -; uuids are hex and dashes), not followed by another digit; or a Russian
# national form, 8 (or 7) and 3-3-2-2 digits, only standing alone: not next to a letter, digit,
# '_', '-', '+' or a '.' inside a word, so it cannot match inside an id (a uuid's digit runs
# touch hex letters or its dashes, a request id's touch its prefix).
_PHONE = re.compile(
    r"\+[1-9](?:[ ()-]{0,2}\d){6,14}(?!\d)"
    r"|(?<![\w.+-])[78](?:[ ()-]{0,2}\d{3}){2}(?:[ -]{0,2}\d{2}){2}(?![\w+-]|\.\w)"
)
_SHORTEST_NUMBER = len("+1234567")
_NOT_DIGIT = re.compile(r"[^\d+]")


def _mask_match(match: re.Match[str]) -> str:
    return mask(_NOT_DIGIT.sub("", match.group(0)))


def mask_text(value: str) -> str:
    """value with every phone-shaped number in it masked (ids and other numbers untouched)."""
    if len(value) < _SHORTEST_NUMBER:
        return value
    return _PHONE.sub(_mask_match, value)


def _is_id_key(key: str) -> bool:
    return key == "id" or key.endswith("_id") or key in _UNTOUCHED_KEYS


def _redact(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in event_dict.items():
        if key in SECRET_KEYS:
            event_dict[key] = "[redacted]"
        elif not isinstance(value, str) or _is_id_key(key):
            continue
        elif key in PHONE_KEYS:
            if "*" not in value:
                event_dict[key] = mask(value)
        else:
            event_dict[key] = mask_text(value)
    return event_dict


class _Timestamper:
    """event_dict["timestamp"]: now in UTC, ISO 8601 with microseconds and Z, as structlog's
    TimeStamper(fmt="iso", utc=True) writes it, with the date and time of day formatted once a
    second."""

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(
        self, _: Any, __: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        event_dict["timestamp"] = f"{self._prefix}.{int((now - second) * 1e6):06d}Z"
        return event_dict


def _orjson_dumps(value: Any, **kwargs: Any) -> bytes:
    # non-str keys (an int key in a logged dict) are written as strings, as json.dumps does
    return orjson.dumps(value, default=kwargs.get("default"), option=orjson.OPT_NON_STR_KEYS)


def configure_logging(service: str, *, level: str = "info", json: bool | None = None) -> None:
    """Configure structlog and the stdlib root logger once per process."""
    use_json = (not sys.stderr.isatty()) if json is None else json
    renderer: Any
    factory: Any
    if use_json and hasattr(sys.stderr, "buffer"):
        renderer = structlog.processors.JSONRenderer(serializer=_orjson_dumps)
        factory = structlog.BytesLoggerFactory(file=sys.stderr.buffer)
    else:  # a console (or a stderr without a byte buffer: stdlib json, text)
        renderer = (
            structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer()
        )
        factory = structlog.PrintLoggerFactory(file=sys.stderr)
    numeric = logging.getLevelNamesMapping().get(level.upper())
    if numeric is None:
        raise ValueError(f"unknown log level {level!r}")
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            _Timestamper(),
            structlog.processors.format_exc_info,
            _redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service)
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr)


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
