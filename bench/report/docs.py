"""The docs rewrite: docs/benchmarks.md is partly written by hand; the bench rewrites only
what lies between the GENERATED markers (bench.report.markdown), and docs/benchmarks.png."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.report.markdown import BEGIN, END, markdown
from bench.report.plot import plot

TEMPLATE = """# Benchmarks

`make bench` (`python -m bench`) measures the mesh against baselines measured in the same run,
on the same machine, and writes bench/results/latest.json, this file's generated part and
{png}. See bench/__init__.py for the layout of the harness.

"""


def write_docs(result: dict[str, Any], docs_dir: Path) -> tuple[Path, Path]:
    docs_dir.mkdir(parents=True, exist_ok=True)
    md_path = docs_dir / "benchmarks.md"
    png_path = docs_dir / "benchmarks.png"
    plot(result, png_path)
    generated = markdown(result, png_path.name)
    text = md_path.read_text() if md_path.exists() else TEMPLATE.format(png=png_path.name)
    head, sep, rest = text.partition(BEGIN)
    tail = rest.partition(END)[2] if sep else ""
    md_path.write_text(head + generated + tail.lstrip("\n"))
    return md_path, png_path
