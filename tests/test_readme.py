"""The README's command-line examples, run in order on a fresh clone, must not refuse one another: each parses
with the CLI's own parser, and no `train` writes to a run folder an earlier one made without `--overwrite` or
`--resume` (issue 22: the first "More" example failed right after the first example)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from gantune.cli import build_parser

README = Path(__file__).resolve().parents[1] / "README.md"


def commands() -> list[list[str]]:
    """The `python -m gantune …` lines of the README's "The command line" section, in order, continuations joined."""
    section = README.read_text().split("## The command line", 1)[1].split("\n## ", 1)[0]
    found = []
    for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("#", 1)[0].strip()
            if line.startswith("python -m gantune ") and "…" not in line and "--help" not in line:
                found.append(shlex.split(line)[3:])
    return found


def test_the_command_line_examples_parse_and_never_reuse_a_run_folder_unasked():
    made: set[str] = set()
    trains = 0
    for args in commands():
        parsed = build_parser().parse_args(args)
        if parsed.command != "train":
            continue
        trains += 1
        if parsed.resume:
            assert parsed.resume in made, f"{shlex.join(args)} resumes a run no earlier example made"
            continue
        out = getattr(parsed, "out", None)  # flags default to "not given"
        if out is None:
            continue  # a new runs/<method>-<preset>-<time> folder each time
        assert out not in made or parsed.overwrite, f"{shlex.join(args)}: {out} already holds a run; add --overwrite"
        made.add(out)
    assert trains >= 5
