"""What each service process costs, read from /proc: resident memory and CPU time; and py-spy
profiles of running services."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")
# The name under which a pass on PostgreSQL counts its database server: the postmaster and
# every backend it forked (tree_cpu_seconds), not one process.
POSTGRES = "postgres"


def rss_mb(pid: int) -> float | None:
    """VmRSS of the process in MB (10^6 bytes), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024 / 1e6
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of the process (all its threads) so far."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    # after the command name: state is field 3, utime 14 and stime 15 (1-based, man 5 proc)
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat's fields after the command name (field 3, the state, first)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            text = stat.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return text.rpartition(")")[2].split()


def tree_cpu_seconds(pid: int) -> float | None:
    """CPU time of the process and of all its children, the live ones (each with its own
    reaped children) and the ones it reaped: a PostgreSQL server's postmaster and backends."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    # utime, stime, cutime, cstime: fields 14-17 (1-based, man 5 proc); ppid is field 4
    total = sum(int(f) for f in fields[11:15])
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        child = _stat_fields(int(entry.name))
        if child is not None and child[1] == str(pid):
            total += sum(int(f) for f in child[11:15])
    return total / _TICKS


@dataclass(frozen=True, slots=True)
class CpuMark:
    times: dict[str, float]


def cpu_mark(pids: Mapping[str, int]) -> CpuMark:
    """Each process's CPU time so far (POSTGRES: its whole tree)."""
    times = {}
    for name, pid in pids.items():
        value = tree_cpu_seconds(pid) if name == POSTGRES else cpu_seconds(pid)
        if value is not None:
            times[name] = value
    return CpuMark(times)


def cpu_since(mark: CpuMark, pids: Mapping[str, int]) -> dict[str, float]:
    """CPU seconds each process used since mark."""
    now = cpu_mark(pids)
    return {
        name: round(now.times[name] - mark.times[name], 3)
        for name in now.times
        if name in mark.times
    }


def rss_all(pids: Mapping[str, int]) -> dict[str, float]:
    result = {}
    for name, pid in pids.items():
        value = rss_mb(pid)
        if value is not None:
            result[name] = round(value, 1)
    return result


class Profiler:
    """py-spy record (raw collapsed stacks) of some processes while a block runs.

    with Profiler(out_dir, "verify", pids):   ...   then .summaries() for the hottest frames."""

    def __init__(self, out_dir: Path, label: str, pids: Mapping[str, int], *, rate: int = 67):
        self._out_dir = out_dir
        self._label = label
        self._pids = dict(pids)
        self._rate = rate
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self.files: dict[str, Path] = {}
        self.available = shutil.which("py-spy") is not None or _venv_py_spy() is not None

    def __enter__(self) -> Profiler:
        if not self.available:
            return self
        exe = shutil.which("py-spy") or str(_venv_py_spy())
        self._out_dir.mkdir(parents=True, exist_ok=True)
        for name, pid in self._pids.items():
            path = self._out_dir / f"{self._label}-{name}.txt"
            self.files[name] = path
            self._procs[name] = subprocess.Popen(
                [
                    exe,
                    "record",
                    "--pid",
                    str(pid),
                    "--format",
                    "raw",
                    "--rate",
                    str(self._rate),
                    "--nonblocking",
                    "--output",
                    str(path),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self._procs.values():
            proc.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
        for proc in self._procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def summaries(self, top: int = 8) -> dict[str, dict[str, list[tuple[str, float]]]]:
        """Per process: the frames with the most samples, inclusive and self, as fractions."""
        return {name: summarise(path, top) for name, path in self.files.items() if path.exists()}


def _venv_py_spy() -> Path | None:
    import sys

    candidate = Path(sys.executable).parent / "py-spy"
    return candidate if candidate.exists() else None


def summarise(path: Path, top: int = 8) -> dict[str, list[tuple[str, float]]]:
    """Collapsed stacks ("frame;frame;frame count" lines) -> the hottest frames.

    `inclusive`: share of samples with the frame anywhere on the stack (each frame counted once
    per stack); `self`: share of samples with the frame on top."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";") if f and not f.startswith("process ")]
        frames = [f for f in frames if not f.startswith("thread ")]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if total == 0:
        return {"inclusive": [], "self": [], "samples": []}
    return {
        "samples": [("total", float(total))],
        "inclusive": [(f, round(n / total, 3)) for f, n in inclusive.most_common(top)],
        "self": [(f, round(n / total, 3)) for f, n in own.most_common(top)],
    }


def _short(frame: str) -> str:
    """`func (path/to/module.py:123)` -> `func (module.py)`."""
    name, sep, where = frame.partition(" (")
    if not sep:
        return frame
    file = where.rstrip(")").rsplit(":", 1)[0]
    parts = Path(file).parts
    short = "/".join(parts[-2:]) if len(parts) >= 2 else file
    return f"{name} ({short})"
