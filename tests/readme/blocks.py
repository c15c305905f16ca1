"""The runnable blocks of a Markdown document: its ```bash and ```python fences, in order, and what they print.

The README's tour is meant to run top to bottom against a fresh `make run`. A fence tagged `bash` or `python` is a
block to run; an untagged fence (the `make run` / `make test` listing, a directory tree) is not. A block whose first
line starts `# needs ` asks for something `make run` does not give (a Docker engine, a Ray cluster) and is skipped;
one whose first line starts `# slow:` runs, with a longer timeout.

A bash block shows what its commands print as whole-line comments right after them (`# {"action":[...],...}`, a
line starting `#  ` continuing the one above). Those answers are a fresh run's: ids, returns and counts change with
timing and load, so they are compared by shape only, every number (and null) standing for any number. Every JSON
record or line the block prints must have the shape of one of the answers shown: an id that does not exist turns
an answer into a 422 error body or a null, which no shown answer looks like.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

RUNNABLE = ("bash", "python")
SKIP_PREFIX = "# needs "
SLOW_PREFIX = "# slow:"
_FENCE = re.compile(r"^```(\S*)\s*$")
# An answer line: a whole-line comment holding JSON or a CSV row, not prose (`# /act serves ...`, `# slow: ...`).
_ANSWER = re.compile(r"^# ([\[{\-\d].*)$")
_CONTINUATION = re.compile(r"^#  (\S.*)$")
# A number or null standing alone: not the digits of a name (`Pendulum-v1`, `policy_2`).
_VALUE = re.compile(r"(?<![\w.])(?:-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|null)(?![\w.])")


@dataclass(frozen=True)
class Block:
    """One fenced block: where it is, its language, its code, and why it is skipped (empty when it runs)."""

    source: str
    line: int  # the fence's line number, 1-based
    lang: str
    code: str
    skip: str = ""
    answers: tuple[str, ...] = field(default=())

    @property
    def slow(self) -> bool:
        return self.first_line.startswith(SLOW_PREFIX)

    @property
    def first_line(self) -> str:
        return self.code.lstrip("\n").split("\n", 1)[0].strip()

    @property
    def label(self) -> str:
        return f"{self.source}:{self.line} ({self.lang}{', slow' if self.slow else ''})"


def extract(text: str, source: str) -> list[Block]:
    """Every fenced block of `text`, in order; the runnable languages only, the skipped ones marked."""
    blocks: list[Block] = []
    lines = text.split("\n")
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        start = index
        index += 1
        body: list[str] = []
        while index < len(lines) and not lines[index].startswith("```"):
            body.append(lines[index])
            index += 1
        index += 1  # the closing fence
        lang = opening.group(1)
        if lang not in RUNNABLE:
            continue
        code = "\n".join(body) + "\n"
        block = Block(source, start + 1, lang, code, answers=tuple(answers_shown(code)) if lang == "bash" else ())
        if block.first_line.startswith(SKIP_PREFIX):
            block = Block(source, start + 1, lang, code, skip=block.first_line[2:], answers=block.answers)
        blocks.append(block)
    return blocks


def extract_file(path: Path, root: Path) -> list[Block]:
    """The blocks of a file, named by its path under `root` (its full path when it is elsewhere)."""
    name = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
    return extract(path.read_text(encoding="utf-8"), name)


def answers_shown(code: str) -> list[str]:
    """The answers a bash block shows as whole-line comments, continuation lines joined to theirs."""
    answers: list[str] = []
    for line in code.split("\n"):
        continued = _CONTINUATION.match(line)
        if continued and answers:
            answers[-1] += continued.group(1)
            continue
        shown = _ANSWER.match(line)
        if shown:
            answers.append(shown.group(1).strip())
    return answers


def shape(text: str) -> str:
    """`text` with every number and null replaced by N."""
    return _VALUE.sub("N", text)


def printed_records(stdout: str) -> list[str]:
    """What a block printed, one record per line; curl prints JSON without a newline, so `}{` splits records."""
    records: list[str] = []
    for line in stdout.split("\n"):
        records.extend(part for part in re.split(r"(?<=\})(?=\{)", line.strip()) if part)
    return records


def unexpected_records(block: Block, stdout: str) -> list[str]:
    """The printed records whose shape matches no answer the block shows (none when it shows no answer)."""
    if not block.answers:
        return []
    shapes = {shape(answer) for answer in block.answers}
    return [record for record in printed_records(stdout) if shape(record) not in shapes]
