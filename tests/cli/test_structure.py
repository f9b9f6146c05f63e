"""The CLI's shape: it speaks only the services' gRPC APIs (no service's domain, service layer
or store imported), and every command group registers its commands through main.GROUPS."""

from __future__ import annotations

import ast
from pathlib import Path

from services.cli import main

CLI = Path(main.__file__).parent
SERVICES = ("services.operator_registry", "services.notifier", "services.messenger_gateway")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_the_cli_imports_no_service_internals() -> None:
    for path in sorted(CLI.glob("*.py")):
        inside = [m for m in _imports(path) if m.startswith(SERVICES)]
        assert not inside, f"{path.name} imports {inside}: use the gRPC API (or services.common)"


def test_every_command_group_is_registered_once_and_builds_its_commands() -> None:
    names = [group.__name__ for group in main.GROUPS]  # type: ignore[attr-defined]
    assert len(names) == len(set(names))
    usage = main.build_parser().format_usage()  # idmesh [-h] {up,down,status,...}
    commands = set(usage[usage.index("{") + 1 : usage.index("}")].split(","))
    assert {
        "up",
        "down",
        "status",
        "identify",
        "registry",
        "gateway",
        "notifier",
        "pki",
    } <= commands
