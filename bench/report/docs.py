"""The docs rewrite: docs/benchmarks.md is partly written by hand; the bench rewrites only
what lies between the GENERATED markers (bench.report.markdown), and docs/benchmarks.png."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.report.markdown import BEGIN, END, markdown
from bench.report.plot import plot

TEMPLATE = """# Benchmarks

`make bench` (`python -m bench`) measures the mesh against baselines measured in the same run,
on the same machine, and writes bench/results/latest.json, the results below and {png}. See
bench/__init__.py for the layout of the harness. This page is: the method, the results of the
last run (generated), and where the time goes.

## Method: what is measured, against what

(The scenarios, each figure and its same-run baseline.)

{begin}
{end}

## Where the time goes

(One account, in the present tense, from the profiles and the CPU per operation.)
"""
"""The page's shape when there is none yet: the method, the generated results between BEGIN and
END, where the time goes. A page that exists keeps its own text around the generated part."""


def write_docs(result: dict[str, Any], docs_dir: Path) -> tuple[Path, Path]:
    docs_dir.mkdir(parents=True, exist_ok=True)
    md_path = docs_dir / "benchmarks.md"
    png_path = docs_dir / "benchmarks.png"
    plot(result, png_path)
    generated = markdown(result, png_path.name)
    page = md_path.read_text() if md_path.exists() else None
    md_path.write_text(rewrite_page(page, generated, png_path.name))
    return md_path, png_path


def rewrite_page(page: str | None, generated: str, png_name: str) -> str:
    """The page with its generated part replaced (the TEMPLATE's shape when there is no page):
    the text before BEGIN (the method) and after END (where the time goes) is kept."""
    text = page if page is not None else TEMPLATE.format(png=png_name, begin=BEGIN, end=END)
    head, sep, rest = text.partition(BEGIN)
    tail = rest.partition(END)[2].lstrip("\n") if sep else ""
    return head + generated + ("\n" + tail if tail else "")
