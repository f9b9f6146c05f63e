"""The development SMS channel: one JSON line per message appended to a file (the outbox).

The outbox is the SMS channel the CLI and the tests read the one-time codes from, not a log:

    {"sent_at": "...", "messenger_id": "alpha", "identification_id": "...",
     "phone_number": "+79031234567", "code": "123456", "text": "..."}

The file is opened once, with O_APPEND, on the first message, and each line is written with one
write() on the event loop's thread (no buffer in the process: the line is in the file, for any
reader, when send returns; a short append to a local file takes microseconds, like a log line).
Lines of concurrent writers (several gateway processes) never interleave. The file is created
readable by its owner only: it holds live one-time codes. If the file is removed or replaced
while the gateway runs, the next message opens the new path.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from services.common.timeutil import Clock, SystemClock, to_iso
from services.messenger_gateway.identification.model import SmsMessage


class FileSmsSender:
    def __init__(self, path: Path, *, clock: Clock | None = None) -> None:
        self.path = path
        self._clock = clock or SystemClock()
        self._fd: int | None = None
        self._inode: tuple[int, int] | None = None  # (device, inode) of the open file

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
        self._append((line + "\n").encode())

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            self._inode = None

    def _append(self, data: bytes) -> None:
        fd = self._open()
        written = os.write(fd, data)
        if written != len(data):
            raise OSError(f"short write to {self.path}: {written} of {len(data)} bytes")

    def _open(self) -> int:
        """The outbox's descriptor: opened once, and again only if the path no longer names
        the open file (removed, or replaced by a reader resetting it)."""
        if self._fd is not None:
            try:
                status = os.stat(self.path)
            except FileNotFoundError:
                status = None
            if status is not None and (status.st_dev, status.st_ino) == self._inode:
                return self._fd
            self.close()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        status = os.fstat(fd)
        self._fd, self._inode = fd, (status.st_dev, status.st_ino)
        return fd
