"""`python -m tools.chaos`'s refusals of options it cannot honour: said before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.localmesh.netns import Network
from tools.chaos.__main__ import main


def test_partitions_need_postgres(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--partitions"])
    assert exit_.value.code == 2
    assert "--partitions and --no-partitions need --postgres" in capsys.readouterr().err


def test_partitions_asked_for_where_namespaces_cannot_be_made_exit_with_the_reason(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr(Network, "available", staticmethod(lambda: "`ip netns add` refused"))
    out = tmp_path / "run"
    assert main(["--postgres", "--partitions", "--rounds", "1", "--out", str(out)]) == 2
    assert capsys.readouterr().err == "chaos: cannot inject partitions: `ip netns add` refused\n"
    assert not out.exists()  # nothing started
