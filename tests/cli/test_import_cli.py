"""`idmesh registry import`: a CSV of a few thousand rows through the CLI to a running registry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.cli.conftest import write_csv

pytestmark = pytest.mark.mesh


def rows(count: int, *, base: int, prefix: str = "IMP") -> list[str]:
    return [f"+7906{base + i:07d},{prefix}-{base + i},2024-0{1 + i % 9}-15" for i in range(count)]


def test_a_clean_file_is_imported_and_can_be_looked_up(idmesh: Any, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "clean.csv", rows(3000, base=1_000_000))
    result = idmesh("registry", "import", "-o", "beeline", str(path), "--batch", "700", "--json")
    assert result.code == 0, result.err
    report = result.json()
    assert (report["rows"], report["imported"], report["rejected"]) == (3000, 3000, 0)
    assert report["committed"] is True and report["errors"] == []
    sub = idmesh("registry", "get", "-o", "beeline", "-p", "+79061002999", "--json").json()
    assert sub["subscriber"]["contract_id"] == "IMP-1002999"
    assert sub["subscriber"]["activated_at"].startswith("2024-")


def test_invalid_rows_are_reported_by_line_and_nothing_is_committed(
    idmesh: Any, tmp_path: Path
) -> None:
    data = rows(2000, base=2_000_000)
    data[9] = "+74951234567,IMP-land,2024-01-15"  # line 11: a landline
    data[99] = "+79062000099,IMP-bad-date,2024-13-45"  # line 101: not a date
    data[199] = "+79062000199,IMP-short"  # line 201: a field missing
    data[299] = data[298].replace("IMP-2000298", "IMP-dup")  # line 301: the number of line 300
    path = write_csv(tmp_path / "bad.csv", data)
    refused = idmesh("registry", "import", "-o", "beeline", str(path))
    assert refused.code == 1
    assert "rejected: 4" in refused.out and "committed: False" in refused.out
    assert "nothing was committed" in refused.out
    lines = [line.strip() for line in refused.out.splitlines() if line.startswith("  line")]
    assert [line.split(":")[0] for line in lines] == ["line 11", "line 101", "line 201", "line 301"]
    assert "not a mobile number" in lines[0]
    assert "'2024-13-45' is not a date" in lines[1]
    assert "expected 3 fields, got 2" in lines[2]
    assert "is also on line 300" in lines[3]
    absent = idmesh("registry", "get", "-o", "beeline", "-p", "+79062000000")
    assert absent.code == 1 and absent.err.startswith("error: NOT_FOUND")

    partial = idmesh("registry", "import", "-o", "beeline", str(path), "--valid-rows", "--json")
    assert partial.code == 1  # rows were rejected, though the valid ones committed
    report = partial.json()
    assert (report["imported"], report["rejected"], report["committed"]) == (1996, 4, True)
    again = idmesh("registry", "import", "-o", "beeline", str(path), "--valid-rows", "--json")
    assert again.json()["imported"] == 0  # every number now has its contract: conflicts
    assert again.json()["rejected"] == 2000


def test_a_file_without_the_header_is_refused_before_sending(idmesh: Any, tmp_path: Path) -> None:
    path = tmp_path / "noheader.csv"
    path.write_text("+79061234567,X-1,2024-01-01\n")
    refused = idmesh("registry", "import", "-o", "beeline", str(path))
    assert refused.code == 1
    assert refused.err.startswith("error: ") and "expected the header" in refused.err


def test_terminate_bulk_ends_the_contracts_of_a_file_and_reports_each_refusal(
    idmesh: Any, tmp_path: Path
) -> None:
    numbers = [f"+79064{i:06d}" for i in range(1500)]
    contracts = [f"{n},TB-{n[-6:]},2024-03-01" for n in numbers]
    imported = idmesh(
        "registry", "import", "-o", "beeline", str(write_csv(tmp_path / "c.csv", contracts))
    )
    assert imported.code == 0, imported.err

    lines = [f"{n},contract-ended" for n in numbers]
    lines[9] = "+79064999999,contract-ended"  # line 11: no contract
    lines[19] = f"{numbers[19]},no-such-reason"  # line 21: an unknown reason
    lines[29] = f"{numbers[28]},"  # line 31: ended by line 30 already (an empty reason: ended)
    path = write_csv(tmp_path / "ends.csv", lines, header="phone_number,reason")
    result = idmesh("registry", "terminate-bulk", "-o", "beeline", str(path), "--batch", "400")
    assert result.code == 1
    assert "rows: 1500" in result.out and "ended: 1497" in result.out
    assert "refused: 3" in result.out
    refusals = [line.strip() for line in result.out.splitlines() if line.startswith("  line")]
    assert [r.split(":")[0] for r in refusals] == ["line 11", "line 21", "line 31"]
    assert [r.split(": ")[1] for r in refusals] == ["NOT_FOUND", "INVALID", "NOT_ACTIVE"]
    sub = idmesh("registry", "get", "-o", "beeline", "-p", numbers[0], "--json").json()
    assert sub["subscriber"]["state"] == "CONTRACT_STATE_TERMINATED"
    kept = idmesh("registry", "get", "-o", "beeline", "-p", numbers[19], "--json").json()
    assert kept["subscriber"]["state"] == "CONTRACT_STATE_ACTIVE"

    again = idmesh("registry", "terminate-bulk", "-o", "beeline", str(path), "--json")
    assert again.code == 1
    assert (again.json()["ended"], again.json()["refused"]) == (0, 1500)  # nothing ends twice


def test_terminate_bulk_refuses_a_file_without_the_phone_number_column(
    idmesh: Any, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "wrong.csv", ["+79031234567"], header="number")
    result = idmesh("registry", "terminate-bulk", "-o", "beeline", str(path))
    assert result.code == 1
    assert "expected the header 'phone_number,[reason],[recipient_operator_id]'" in result.err
