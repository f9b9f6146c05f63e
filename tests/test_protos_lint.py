"""`buf lint` (STANDARD) passes on protos/. `make lint` installs buf from npm; without it (a
machine with no Node.js) this test is skipped and `make lint` is the check."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BUF = ROOT / "node_modules" / ".bin" / "buf"


@pytest.mark.skipif(not BUF.exists() and shutil.which("buf") is None, reason="buf not installed")
def test_buf_lint_passes() -> None:
    buf = str(BUF) if BUF.exists() else "buf"
    result = subprocess.run([buf, "lint"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
