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


# --- the messenger gateway's rooms -----------------------------------------------------------

GATEWAY = Path(__file__).parents[2] / "services" / "messenger_gateway"
GW = "services.messenger_gateway"
FEATURES = ("identification", "notices", "routing", "policy")
# What only adapters, entry points and the composition root may import.
DRIVERS = ("grpc", "sqlite3", "aiosqlite", "asyncpg", "services.common.db", "services.common.pg")
USE_CASES = tuple(f"{GW}.{f}.{m}" for f in FEATURES for m in ("service", "verifier"))
# Files over ~400 lines, each with its reason.
LONG_FILES = {
    # the rules as data and the readable reference decision, the values, the order state
    # machine, the input rules and the errors
    "policy/model.py": 440,
    # the compact index: ids to rows, the pairs' arrays, the load, the overlay and its merge,
    # and the fast decisions (one pair, a batch over the arrays) that must agree with the rules
    "policy/index.py": 900,
    # the policy's use cases: preferences, orders, the index's coherence and the change stream,
    # over the whole in-memory index or the shards served here (adding, waiting for and reading
    # shards is policy/shard_serving.py)
    "policy/service.py": 620,
    # each engine's whole policy schema, snapshot and change log
    "adapters/policy_store.py": 620,
    "adapters/policy_store_pg.py": 560,
    # one engine's whole identification store: reads, leases and their fencing tokens, the unit
    # of work's statements
    "adapters/store.py": 540,
    "adapters/store_pg.py": 500,
    # one job, the verification task's life: ask, retry, follow a hint, record, lease and its
    # fence, sweep
    "identification/verifier.py": 520,
}


def _gateway_files() -> list[Path]:
    return sorted(GATEWAY.rglob("*.py"))


def _room(path: Path) -> str:
    return path.relative_to(GATEWAY).as_posix()


def _starts(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_the_gateway_is_organised_by_feature() -> None:
    rooms = {p.relative_to(GATEWAY).parts[0] for p in _gateway_files() if p.parent != GATEWAY}
    assert rooms == {*FEATURES, "adapters", "api"}
    top = {p.name for p in GATEWAY.glob("*.py")}
    assert top == {"__init__.py", "__main__.py", "config.py", "main.py", "service.py"}


def test_models_and_ports_import_no_driver_use_case_adapter_or_entry_point() -> None:
    for path in _gateway_files():
        if path.name not in ("model.py", "ports.py", "transitions.py", "index.py"):
            continue
        bad = [
            m
            for m in _imports(path)
            if _starts(m, DRIVERS) or "_pb2" in m or _starts(m, (*USE_CASES, f"{GW}.adapters"))
        ]
        bad += [m for m in _imports(path) if _starts(m, (f"{GW}.api", f"{GW}.main"))]
        assert not bad, f"{_room(path)} imports {bad}: models and ports depend on nothing outer"


def test_use_cases_import_no_driver_adapter_or_entry_point() -> None:
    for path in _gateway_files():
        room = _room(path)
        if not room.startswith(FEATURES) or path.name in ("model.py", "ports.py", "index.py"):
            continue
        if room == "notices/consumer.py":  # the notifier stream's client: an inbound adapter
            continue
        bad = [
            m
            for m in _imports(path)
            if _starts(m, DRIVERS)
            or "_pb2" in m
            or _starts(m, (f"{GW}.adapters", f"{GW}.api", f"{GW}.main"))
        ]
        assert not bad, f"{room} imports {bad}: use cases reach the world through ports"


def test_adapters_take_their_types_from_models_and_ports_never_from_use_cases() -> None:
    for path in sorted((GATEWAY / "adapters").glob("*.py")):
        bad = [
            m
            for m in _imports(path)
            if m.startswith(GW)
            and not m.startswith(f"{GW}.adapters")
            and not m.endswith((".model", ".ports", ".index"))
        ]
        assert not bad, f"adapters/{path.name} imports {bad}: take types from a model or a port"


def test_the_registrys_adapters_and_relay_never_import_its_use_cases() -> None:
    registry = GATEWAY.parent / "operator_registry"
    for name in ("store.py", "store_pg.py", "import_store.py", "import_store_pg.py", "relay.py"):
        bad = {m for m in _imports(registry / name) if m == "services.operator_registry.service"}
        assert not bad, f"operator_registry/{name} imports the use cases: depend on ports.py"


def test_only_the_composition_root_wires_adapters_into_use_cases() -> None:
    for path in _gateway_files():
        room = _room(path)
        if room.startswith("adapters/") or room == "main.py":
            continue
        bad = [m for m in _imports(path) if _starts(m, (f"{GW}.adapters",))]
        assert not bad, f"{room} imports adapters {bad}: main.py wires them"


def test_gateway_files_stay_short_or_say_why() -> None:
    for path in _gateway_files():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        limit = LONG_FILES.get(_room(path), 400)
        assert lines <= limit, f"{_room(path)} has {lines} lines (limit {limit})"
