"""`buf lint` (STANDARD) passes on protos/. `make test` and `make lint` install buf from npm
into node_modules/ first, so this test runs (it is never skipped): without buf it fails, saying
how to get it."""

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUF = ROOT / "node_modules" / ".bin" / "buf"


def test_buf_lint_passes() -> None:
    buf = str(BUF) if BUF.exists() else shutil.which("buf")
    assert buf is not None, (
        "buf is not installed: `make test` (or `make lint`) installs it from npm"
    )
    result = subprocess.run([buf, "lint"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
