"""The local mesh as a library: its place in the architecture, and the pytest plugin used the
way another project uses it (examples/downstream: its own pyproject.toml, no conftest, the
fixtures from the `pytest11` entry point of the installed idmesh)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import services.localmesh
from tests.cli.test_structure import _imports

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = Path(services.localmesh.__file__).parent
SERVICES = ("services.operator_registry", "services.notifier", "services.messenger_gateway")


def test_the_library_uses_no_service_internals_and_nothing_of_the_cli() -> None:
    for path in sorted(LIBRARY.glob("*.py")):
        wrong = [m for m in _imports(path) if m.startswith((*SERVICES, "services.cli", "tests"))]
        assert not wrong, f"{path.name} imports {wrong}: the library runs services as processes"


def test_no_service_imports_the_library() -> None:
    for package in (*SERVICES, "services.common"):
        folder = ROOT / package.replace(".", "/")
        for path in sorted(folder.rglob("*.py")):
            used = [m for m in _imports(path) if m.startswith("services.localmesh")]
            assert not used, f"{path.relative_to(ROOT)} imports {used}"


def test_the_public_api_is_what_the_package_exports() -> None:
    for name in services.localmesh.__all__:
        assert hasattr(services.localmesh, name), name


def test_a_downstream_project_tests_against_the_mesh_with_the_plugin() -> None:
    project = ROOT / "examples" / "downstream"
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTEST_ADDOPTS"}}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-v"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "plugins:" in output and "idmesh-" in output, output  # the entry point's plugin
    assert "test_a_user_is_identified_and_revoked_when_the_contract_ends PASSED" in output


def _python_blocks(doc: Path) -> list[str]:
    blocks: list[str] = []
    current: list[str] = []
    inside = False
    for line in doc.read_text().splitlines():
        if line.strip() == "```python":
            inside, current = True, []
        elif inside and line.strip() == "```":
            inside = False
            blocks.append("\n".join(current) + "\n")
        elif inside:
            current.append(line)
    return blocks


def test_the_plugin_example_in_the_docs_is_the_example_project_s_test() -> None:
    example = ROOT / "examples" / "downstream" / "tests" / "test_signup.py"
    shown = _python_blocks(ROOT / "docs" / "testing.md")[0]
    assert shown.strip() in example.read_text()


def test_the_library_example_in_the_docs_runs(tmp_path: Path) -> None:
    script = _python_blocks(ROOT / "docs" / "testing.md")[1]
    assert 'Path("my-mesh")' in script
    (tmp_path / "example.py").write_text(script)
    result = subprocess.run(
        [sys.executable, "example.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "state: IDENTIFICATION_STATE_IDENTIFIED" in result.stdout, result.stdout
    assert (tmp_path / "my-mesh" / "mesh.json").exists()
