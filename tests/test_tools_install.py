"""The project's tools install into the project, whatever folder it sits in.

A checkout below a folder that holds a package.json (a monorepo, a home folder with one) once
had `make` install buf into that folder's node_modules/, and the buf tests then found no buf.
Here the files the install rule uses (the Makefile, and package.json and package-lock.json when
the project has them) are copied into such a folder, the Makefile's buf rule runs there, and buf
must be in the copy's own node_modules/. npm prefers its cache (warm once `make test` has
installed buf), so this takes seconds and no download on a machine that has run it before.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INSTALL_FILES = ("Makefile", "package.json", "package-lock.json")


def test_buf_installs_into_the_project_below_a_folder_with_a_package_json(
    tmp_path: Path,
) -> None:
    outer = tmp_path / "workspace"
    outer.mkdir()
    (outer / "package.json").write_text(json.dumps({"name": "workspace", "private": True}))
    clone = outer / "idmesh"
    clone.mkdir()
    for name in INSTALL_FILES:
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, clone / name)
    env = {**os.environ, "npm_config_prefer_offline": "true"}

    result = subprocess.run(
        ["make", "node_modules/.bin/buf"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    buf = clone / "node_modules" / ".bin" / "buf"
    assert buf.exists(), f"buf is not in the project's node_modules: {result.stdout}"
    assert not (outer / "node_modules").exists(), "buf went into the enclosing folder"
    assert json.loads((outer / "package.json").read_text()) == {
        "name": "workspace",
        "private": True,
    }
    version = subprocess.run([str(buf), "--version"], capture_output=True, text=True, timeout=60)
    assert version.stdout.strip() == "1.75.0"
