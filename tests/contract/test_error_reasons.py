"""Every reason a refusal can carry is documented in idmesh.common.v1.ErrorReason."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path
from typing import TypeVar

from idmesh.common.v1 import errors_pb2

import services
from services.common.errors import DomainError

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "ERROR_REASON_"
T = TypeVar("T")


def documented_reasons() -> set[str]:
    names = errors_pb2.ErrorReason.keys()
    return {n.removeprefix(PREFIX) for n in names if n != f"{PREFIX}UNSPECIFIED"}


def _all_subclasses(klass: type[T]) -> list[type[T]]:
    found: list[type[T]] = []
    for sub in klass.__subclasses__():
        found.extend([sub, *_all_subclasses(sub)])
    return found


def test_every_domain_error_class_names_a_documented_reason() -> None:
    for module in pkgutil.walk_packages(services.__path__, "services."):
        if not module.name.startswith("services.cli") and not module.name.endswith("__main__"):
            importlib.import_module(module.name)
    documented = documented_reasons()
    for klass in _all_subclasses(DomainError):
        if not klass.__module__.startswith("services."):
            continue
        if klass.__subclasses__() and klass.REASON == DomainError.REASON:
            continue  # an abstract base: its subclasses name their reasons
        assert klass.REASON in documented, f"{klass.__qualname__}.REASON {klass.REASON!r}"


def test_every_reason_given_at_a_raise_site_is_documented() -> None:
    documented = documented_reasons()
    used = set()
    for path in (ROOT / "services").rglob("*.py"):
        used |= set(re.findall(r'\breason="([A-Z_]+)"', path.read_text()))
    assert used, "no explicit reasons found: the pattern is stale"
    assert used <= documented, sorted(used - documented)


def test_reasons_are_upper_snake_and_listed_in_the_api_docs() -> None:
    page = (ROOT / "docs" / "api.md").read_text()
    for reason in documented_reasons():
        assert re.fullmatch(r"[A-Z][A-Z0-9_]*", reason)
        assert f"`{reason}`" in page, f"docs/api.md does not document {reason}"
