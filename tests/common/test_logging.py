"""Logs never carry a full phone number or a code, whatever key they are logged under."""

import json

import pytest

from services.common.logging import configure_logging, get_logger


def test_phone_numbers_are_masked_and_secret_keys_redacted(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("test", json=True)
    get_logger("t").info(
        "event", note="user +79031234567 asked", code="123456", identification_code="abcdef"
    )
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert "+79031234567" not in json.dumps(line)
    assert line["note"] == "user +7903*****67 asked"
    assert line["code"] == "[redacted]"
    assert line["identification_code"] == "[redacted]"
    assert line["service"] == "test"
