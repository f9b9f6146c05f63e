"""The report of a run, a module each:

targets     the table of targets, read through the scenarios' declared targets
result      the passes of a result, its failures
jsonfile    the result as JSON (bench/results/latest.json)
table       the table of targets as text
markdown    the generated part of docs/benchmarks.md
stores      the stores' sizes: bytes per row, rows written per operation
capacity    docs/capacity.md: what a national deployment needs, from a run's figures
plot        docs/benchmarks.png
docs        the rewrite of docs/benchmarks.md and docs/benchmarks.png
"""

from __future__ import annotations

from bench.report.capacity import write_capacity
from bench.report.docs import rewrite_page, write_docs
from bench.report.jsonfile import SCHEMA, build, read_json, write_json
from bench.report.markdown import BEGIN, END, markdown
from bench.report.plot import plot
from bench.report.result import failed, passes
from bench.report.stores import derive as derive_stores
from bench.report.table import text_table
from bench.report.targets import targets

__all__ = [
    "BEGIN",
    "END",
    "SCHEMA",
    "build",
    "derive_stores",
    "failed",
    "markdown",
    "passes",
    "plot",
    "read_json",
    "rewrite_page",
    "targets",
    "text_table",
    "write_capacity",
    "write_docs",
    "write_json",
]
