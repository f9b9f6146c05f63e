"""The development SMS outbox: every message is a whole line in the file when send returns."""

from __future__ import annotations

import stat
from pathlib import Path

from services.localmesh.sms import latest_code, read_outbox
from services.messenger_gateway.adapters.sms import FileSmsSender
from services.messenger_gateway.identification.model import SmsMessage


def message(i: int) -> SmsMessage:
    return SmsMessage(
        messenger_id="alpha",
        identification_id=f"id-{i}",
        phone_number="+79031234567",
        code=f"{i:06d}",
        text=f"Your code: {i:06d}",
    )


async def test_each_message_is_in_the_outbox_when_send_returns(tmp_path: Path) -> None:
    outbox = tmp_path / "sms" / "outbox.jsonl"
    sender = FileSmsSender(outbox)
    try:
        for i in range(3):
            await sender.send(message(i))
            assert latest_code(outbox, identification_id=f"id-{i}") == f"{i:06d}"
        assert [m["identification_id"] for m in read_outbox(outbox)] == ["id-0", "id-1", "id-2"]
        assert stat.S_IMODE(outbox.stat().st_mode) == 0o600  # it holds live codes
    finally:
        sender.close()


async def test_an_outbox_removed_while_the_gateway_runs_is_created_again(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox.jsonl"
    sender = FileSmsSender(outbox)
    try:
        await sender.send(message(1))
        outbox.unlink()
        await sender.send(message(2))
        assert [m["code"] for m in read_outbox(outbox)] == ["000002"]
    finally:
        sender.close()
