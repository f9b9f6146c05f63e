"""Every shell walkthrough of the README and docs/ runs against a real mesh and prints what the
page shows (tests/doc_commands.py says how a page is read). The pages run in the order a
newcomer reads them, on one mesh of `make up`'s topology started fresh: each page's comments
must be true when the README was followed from the top."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from services.localmesh import Mesh, MeshSpec, MessengerSpec, OperatorSpec, demo_spec
from tests import doc_commands
from tests.doc_commands import REPO, Command, Result, blocks, matches, unmatched

# The reading order: the README, then its links in the order it gives them, then the rest.
PAGES = [
    REPO / "README.md",
    *(
        REPO / "docs" / name
        for name in (
            "cli.md",
            "policy.md",
            "api.md",
            "api-versions.md",
            "operations.md",
            "testing.md",
            "DESIGN.md",
            "CONVENTIONS.md",
            "chaos.md",
            "benchmarks.md",
            "capacity.md",
        )
    ),
]


@pytest.fixture
def demo_mesh(tmp_path: Path) -> Iterator[Mesh]:
    """`make up`'s topology and demo data, on free ports in a folder of its own."""
    demo = demo_spec()
    spec = MeshSpec(
        operators=tuple(
            OperatorSpec(o.operator_id, o.carrier_name, o.seed_file) for o in demo.operators
        ),
        messengers=tuple(MessengerSpec(m.messenger_id) for m in demo.messengers),
    )
    mesh = Mesh(spec, tmp_path / "data")
    mesh.start()
    mesh.write_mesh_file()
    yield mesh
    mesh.stop()


def test_every_page_is_read_in_a_known_order() -> None:
    assert sorted(PAGES) == sorted([REPO / "README.md", *(REPO / "docs").glob("*.md")])


def test_skipped_blocks_say_why_and_cannot_run_on_the_demo_mesh() -> None:
    """A block is skipped only for a command that is not an `idmesh` call on the demo mesh
    (make, docker, kubectl, minutes-long tools) or that needs another mesh (a placeholder no
    output of this mesh prints, such as a second replica's address)."""
    skipped = [b for page in PAGES for b in blocks(page) if b.skipped]
    run = [b for page in PAGES for b in blocks(page) if not b.skipped]
    for block in skipped:
        assert block.skipped and len(block.skipped) > 10, block.source
        assert any(
            not c.line.startswith("idmesh ") or "'s address>" in c.line for c in block.commands
        ), f"{block.source}: only idmesh commands on the demo mesh: run them"
    assert len(run) > len(skipped)  # the walkthroughs run; the exceptions are fewer
    assert all(b.commands for b in run)


@pytest.mark.mesh
@pytest.mark.timeout(600)
def test_the_walkthroughs_print_what_the_pages_show(demo_mesh: Mesh) -> None:
    ran = doc_commands.run_pages(PAGES, demo_mesh.data_dir)
    assert ran >= 60  # the README's, the CLI's and the policy's walkthroughs


def test_a_page_line_that_the_output_lacks_fails_the_command() -> None:
    shown = ["state: IDENTIFICATION_STATE_IDENTIFIED", "reason: ..."]
    output = "identification:\nstate: IDENTIFICATION_STATE_IDENTIFIED\nreason: REASON_X\n"
    assert unmatched(shown, output) is None
    assert unmatched(list(reversed(shown)), output) == "state: IDENTIFICATION_STATE_IDENTIFIED"
    assert unmatched(["allowed: True"], "allowed: False\n") == "allowed: True"
    command = Command("page:1", "idmesh access -m alpha -u u1", ["allowed: False"], exit_code=3)
    assert matches(command, Result(3, "allowed: False\n", ""))
    assert not matches(command, Result(0, "allowed: False\n", ""))  # the exit status counts


def test_the_extractor_reads_commands_outputs_exits_and_skips(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "text\n"
        "```console\n"
        "$ idmesh access -m alpha -u u1    # within seconds\n"
        "...\n"
        "allowed: False\n"
        "[exit 3]\n"
        "$ idmesh status\n"
        "```\n"
        "<!-- doc-test: skip (it runs until stopped) -->\n"
        "```sh\n"
        "make up   # the mesh\n"
        "```\n"
        "```\n"
        "not a command\n"
        "```\n",
        encoding="utf-8",
    )
    console, sh = blocks(page)
    first, second = console.commands
    assert (first.shown, first.exit_code, first.eventually) == (["allowed: False"], 3, True)
    assert (second.line, second.shown, second.exit_code) == ("idmesh status", [], 0)
    assert sh.skipped == "it runs until stopped" and [c.line for c in sh.commands] == [
        "make up   # the mesh"
    ]


def test_a_placeholder_is_the_value_an_earlier_output_printed(tmp_path: Path) -> None:
    runner = doc_commands.Runner(tmp_path)
    command = Command("page:1", "idmesh identify confirm -m alpha <identification_id>")
    with pytest.raises(AssertionError, match="no earlier output printed identification_id"):
        runner.expand(command)
    runner.values["identification_id"] = "abc-123"
    assert runner.expand(command) == "idmesh identify confirm -m alpha abc-123"
