"""Generated code is made by `make proto` only, and never stale."""

import filecmp
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import gen_protos  # noqa: E402


def _files(folder: Path) -> set[Path]:
    return {
        p.relative_to(folder)
        for p in folder.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_generated_code_matches_the_protos(tmp_path: Path) -> None:
    committed = ROOT / "gen" / "python"
    gen_protos.generate(tmp_path)
    fresh = _files(tmp_path)
    assert fresh == _files(committed), "run `make proto`: generated files differ from protos/"
    stale = [
        str(p) for p in sorted(fresh) if not filecmp.cmp(tmp_path / p, committed / p, shallow=False)
    ]
    assert not stale, f"run `make proto`: stale generated files {stale}"
