"""The development SMS channel: one JSON line per message appended to a file (the outbox).

The outbox is the SMS channel the CLI and the tests read the one-time codes from, not a log:

    {"sent_at": "...", "messenger_id": "alpha", "identification_id": "...",
     "phone_number": "+79031234567", "code": "123456", "text": "..."}

Each line is written with one write() on a file opened with O_APPEND, so lines of concurrent
writers (several gateway processes) never interleave. The file is created readable by its owner
only: it holds live one-time codes.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from services.common.timeutil import Clock, SystemClock, to_iso
from services.messenger_gateway.identification.model import SmsMessage


class FileSmsSender:
    def __init__(self, path: Path, *, clock: Clock | None = None) -> None:
        self.path = path
        self._clock = clock or SystemClock()

    async def send(self, message: SmsMessage) -> None:
        line = json.dumps(
            {
                "sent_at": to_iso(self._clock.now()),
                "messenger_id": message.messenger_id,
                "identification_id": message.identification_id,
                "phone_number": message.phone_number,
                "code": message.code,
                "text": message.text,
            },
            ensure_ascii=False,
        )
        await asyncio.to_thread(self._append, (line + "\n").encode())

    def _append(self, data: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            written = os.write(fd, data)
        finally:
            os.close(fd)
        if written != len(data):
            raise OSError(f"short write to {self.path}: {written} of {len(data)} bytes")
