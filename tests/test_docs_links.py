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


def _slug(heading: str) -> str:
    """A heading's anchor as GitHub makes it: lower case, punctuation dropped, spaces as -."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_anchor_names_a_heading_of_its_page(doc: Path) -> None:
    for target in LINK.findall(doc.read_text(encoding="utf-8")):
        if "#" not in target or "://" in target:
            continue
        name, anchor = target.split("#", 1)
        page = (doc.parent / name).resolve() if name else doc
        if page.suffix != ".md":
            continue
        headings = re.findall(r"^#+ (.*)$", page.read_text(encoding="utf-8"), re.MULTILINE)
        assert anchor in {_slug(h) for h in headings}, f"{doc.name}: no heading for {target}"
