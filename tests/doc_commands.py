"""The shell walkthroughs of the README and docs/, extracted and run against a mesh.

What a page shows is what it runs:

- a ```console block holds commands, each on a line starting with `$ `, each followed by the
  output the page shows for it. Every shown line must appear in the command's output (stdout,
  then stderr), in order; other lines may come between them. `...` in a line stands for any
  text, and a line of `...` alone only says that lines were left out. A line `[exit N]` says
  the command exits N; without one it must exit 0.
- a ```sh block holds commands, one a line (comments and blank lines aside); each must exit 0.
- `<name>` in a command stands for the value the page's last output printed as `name: value`
  (`idmesh identify confirm -m alpha <identification_id>` after `identify start`).
- a command whose comment says `within seconds` waits for something the mesh does in the
  background (a notice revoking a user): it is run again until its output matches, for at
  most WITHIN seconds.
- a block preceded by the line `<!-- doc-test: skip (why) -->` is not run: `make up` itself
  (it runs until stopped), commands that need another mesh (`make up-pg`, Docker, Kubernetes)
  or run for minutes (`make chaos`, `make bench`). The reason is required.

`idmesh` commands run in this process through services.cli.main.main (what the console
script runs), the others in bash; all with the repository as the working directory and the
mesh found through IDMESH_DATA_DIR. `python -m tests.doc_commands FILE... --data-dir DIR` runs
the pages against a running mesh (each page once: they change its state).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tests.eventually import eventually_sync

REPO = Path(__file__).resolve().parents[1]
SKIP = re.compile(r"^<!-- doc-test: skip \((?P<why>[^)]+)\) -->$")
FENCE = re.compile(r"^```(?P<lang>\S*)\s*$")
PLACEHOLDER = re.compile(r"<([a-z_]+)>")
SHOWN_VALUE = re.compile(r"^\s*([a-z_]+): (\S+)\s*$")
EXIT = re.compile(r"^\[exit (\d+)\]$")
WITHIN = 30.0  # seconds a `within seconds` command may take to come true


@dataclass
class Command:
    """One command of a page, with what the page shows for it."""

    source: str  # file:line
    line: str
    shown: list[str] = field(default_factory=list)
    exit_code: int = 0

    @property
    def eventually(self) -> bool:
        return "within seconds" in self.comment

    @property
    def comment(self) -> str:
        parts = self.line.split("  #", 1)
        return parts[1] if len(parts) == 2 else ""


@dataclass
class Block:
    source: str
    lang: str
    commands: list[Command]
    skipped: str | None = None  # the reason, when marked


def blocks(path: Path) -> list[Block]:
    """The ```sh and ```console blocks of a page, in order."""
    found: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    name = path.relative_to(REPO) if path.is_relative_to(REPO) else path
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        start = i
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        lang = fence.group("lang")
        if lang in ("sh", "console"):
            skip = SKIP.match(lines[start - 1]) if start > 0 else None
            body = lines[start + 1 : end]
            parse = _console if lang == "console" else _sh
            found.append(
                Block(
                    f"{name}:{start + 1}",
                    lang,
                    parse(body, f"{name}", start + 2),
                    skip.group("why") if skip else None,
                )
            )
        i = end + 1
    return found


def _console(body: list[str], name: str, first: int) -> list[Command]:
    commands: list[Command] = []
    for n, text in enumerate(body, first):
        if text.startswith("$ "):
            commands.append(Command(f"{name}:{n}", text[2:]))
        elif not commands:
            raise ValueError(f"{name}:{n}: a console block starts with a `$ ` command")
        elif exit_line := EXIT.match(text.strip()):
            commands[-1].exit_code = int(exit_line.group(1))
        elif text.strip() not in ("", "..."):
            commands[-1].shown.append(text.rstrip())
    return commands


def _sh(body: list[str], name: str, first: int) -> list[Command]:
    return [
        Command(f"{name}:{n}", text)
        for n, text in enumerate(body, first)
        if text.strip() and not text.lstrip().startswith("#")
    ]


def _pattern(shown: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in shown.split("...")))


def unmatched(shown: list[str], output: str) -> str | None:
    """The first shown line that is not in output (in order), or None when all are."""
    lines = iter(output.splitlines())
    for want in shown:
        pattern = _pattern(want)
        if not any(pattern.fullmatch(line.rstrip()) for line in lines):
            return want
    return None


@dataclass
class Result:
    code: int
    out: str
    err: str


def matches(command: Command, result: Result) -> bool:
    return result.code == command.exit_code and (
        unmatched(command.shown, result.out + result.err) is None
    )


class Runner:
    """Runs a page's commands in order, remembering the `name: value` lines they print."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.values: dict[str, str] = {}

    def expand(self, command: Command) -> str:
        def value(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in self.values:
                raise AssertionError(f"{command.source}: no earlier output printed {name}")
            return self.values[name]

        return PLACEHOLDER.sub(value, command.line)

    def run(self, command: Command) -> None:
        line = self.expand(command)
        last: list[Result] = []

        def as_shown() -> bool:
            last.append(self._execute(line))
            return matches(command, last[-1])

        if command.eventually:
            with contextlib.suppress(AssertionError):  # reported below, with the output
                eventually_sync(as_shown, within=WITHIN, what=command.line, interval=0.2)
        else:
            as_shown()
        result = last[-1]
        missing = unmatched(command.shown, result.out + result.err)
        for text in result.out.splitlines():
            if shown := SHOWN_VALUE.match(text):
                self.values[shown.group(1)] = shown.group(2)
        problem = (
            f"exit {result.code}, the page says {command.exit_code}"
            if result.code != command.exit_code
            else f"the page shows {missing!r}"
            if missing is not None
            else None
        )
        if problem:
            raise AssertionError(
                f"{command.source}: `{line}`: {problem}\n--- stdout\n{result.out}"
                f"--- stderr\n{result.err}"
            )

    def _execute(self, line: str) -> Result:
        words = shlex.split(line, comments=True)
        if words and words[0] == "idmesh":
            return self._idmesh(words[1:])
        done = subprocess.run(
            ["bash", "-c", line],
            cwd=REPO,
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        return Result(done.returncode, done.stdout, done.stderr)

    def _idmesh(self, argv: list[str]) -> Result:
        from services.cli import main as cli

        out, err = io.StringIO(), io.StringIO()
        old_env = os.environ.get("IDMESH_DATA_DIR")
        old_cwd = Path.cwd()
        os.environ["IDMESH_DATA_DIR"] = str(self.data_dir)
        os.chdir(REPO)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    cli.main(argv)
                    code = 0
                except SystemExit as exc:
                    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        finally:
            os.chdir(old_cwd)
            if old_env is None:
                os.environ.pop("IDMESH_DATA_DIR", None)
            else:
                os.environ["IDMESH_DATA_DIR"] = old_env
        return Result(code, out.getvalue(), err.getvalue())

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["IDMESH_DATA_DIR"] = str(self.data_dir)
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        return env


def run_pages(pages: list[Path], data_dir: Path) -> int:
    """Run every unskipped block of pages in order; the number of commands run."""
    runner = Runner(data_dir)
    count = 0
    for page in pages:
        for block in blocks(page):
            if block.skipped:
                continue
            for command in block.commands:
                runner.run(command)
                count += 1
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("pages", nargs="+", type=Path)
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    args = parser.parse_args()
    count = run_pages([p.resolve() for p in args.pages], args.data_dir.resolve())
    print(f"{count} commands ran as the pages show")


if __name__ == "__main__":
    main()
