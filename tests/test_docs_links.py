"""The README and docs/ link only to files of the repository, and those files exist (a clone
has nothing else: no sibling folders, and the docs must read offline)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_link_is_a_file_of_the_repository(doc: Path) -> None:
    assert (REPO / "docs" / "DESIGN.md").is_file()
    for target in LINK.findall(doc.read_text(encoding="utf-8")):
        if target.startswith("#"):
            continue
        assert "://" not in target and not target.startswith("mailto:"), (doc.name, target)
        path = (doc.parent / target.split("#", 1)[0]).resolve()
        assert path.is_relative_to(REPO), f"{doc.name} links outside the repository: {target}"
        assert path.exists(), f"{doc.name} links to a missing file: {target}"
