"""The ``# Launch:`` lines of ``conf/**/*.yaml``: every documented command, parsed into (program, overrides)."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

CONF = Path(__file__).resolve().parents[1] / "conf"
PROGRAMS = {"longrecipe-train": "train", "longrecipe-run": "run", "longrecipe-eval": "evaluate",
            "longrecipe-merge": "merge", "longrecipe-analyze": "analyze", "longrecipe-prepare": "prepare",
            "longrecipe-positions": "positions", "longrecipe-report": "report", "longrecipe-dashboard": "dashboard"}
_START = re.compile(r"^#\s*(?:Launch:\s*)?(?P<cmd>(?:[A-Z_]+=\S+\s+)*longrecipe-[a-z]+\b.*)$")
_ANNOTATION = re.compile(r"\s+(\(.*\)|#.*)$")


@dataclass(frozen=True)
class Launch:
    source: str  # conf-relative file
    line: str  # the command as documented
    program: str
    config: str  # the Hydra config it composes
    multirun: bool
    overrides: tuple[str, ...]  # placeholders <...> replaced by "x"; the "..." of an abbreviated line dropped


def _strip(cmd: str) -> str:
    while True:
        new = _ANNOTATION.sub("", cmd.rstrip())
        if new == cmd.rstrip():
            return new
        cmd = new


def launch_lines(conf: Path = CONF) -> list[Launch]:
    """Every command in the leading comment block that starts with ``# Launch:`` (continuation lines too)."""
    out: list[Launch] = []
    for path in sorted(conf.rglob("*.yaml")):
        lines = path.read_text(encoding="utf-8").splitlines()
        if not any(x.startswith("# Launch:") for x in lines):
            continue
        start = next(i for i, x in enumerate(lines) if x.startswith("# Launch:"))
        i = start
        while i < len(lines) and lines[i].startswith("#"):
            m = _START.match(lines[i])
            i += 1
            if not m:
                continue
            cmd = m["cmd"]
            while cmd.rstrip().endswith("\\") and i < len(lines):  # continued on the next comment line
                cmd = cmd.rstrip()[:-1] + " " + lines[i].lstrip("#").strip()
                i += 1
            cmd = _strip(cmd)
            tokens = [t for t in shlex.split(re.sub(r"<[^>]*>", "x", cmd)) if not re.match(r"^[A-Z_]+=", t)]
            program, args = tokens[0], tokens[1:]
            multirun = "-m" in args
            overrides = tuple(a for a in args if a not in ("-m", "..."))
            out.append(Launch(str(path.relative_to(conf)), cmd, program, PROGRAMS[program], multirun, overrides))
    return out
