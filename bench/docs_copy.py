"""Committed copies of benchmark output, and the same Markdown shown inside a docs page.

No figure in README.md or docs/ may come from a run nobody can look at: a benchmark's ``--update-docs``
writes its output to ``docs/bench/<name>.{json,md}`` and replaces the block between the page's
markers with that Markdown (headings shifted to fit the page). The docs tests check that the block
still equals the copy and that the copy's Markdown is what its JSON renders to.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCS_BENCH = REPO / "docs" / "bench"
HEADING = re.compile(r"^(#+) ", re.MULTILINE)


def markers(name: str) -> tuple[str, str]:
    """The comment lines a page puts around the copy of ``docs/bench/<name>.md``."""
    return (
        f"<!-- BEGIN {name}: docs/bench/{name}.md, written by its benchmark's --update-docs -->",
        f"<!-- END {name} -->",
    )


def at_heading_level(markdown: str, top: int) -> str:
    """``markdown`` with every heading shifted so that its first heading has level ``top``."""
    first = HEADING.search(markdown)
    if not first:
        return markdown
    shift = top - len(first.group(1))
    return HEADING.sub(lambda match: "#" * max(1, len(match.group(1)) + shift) + " ", markdown)


def block(page: Path, name: str) -> str:
    """What ``page`` shows between the markers of ``name``."""
    begin, end = markers(name)
    text = page.read_text()
    return text[text.index(begin) + len(begin) : text.index(end)].strip()


def require_markers(page: Path, name: str) -> None:
    """Stop before a long run whose output could not be published."""
    begin, end = markers(name)
    text = page.read_text()
    if begin not in text or end not in text:
        raise SystemExit(f"{page.relative_to(REPO)} has no markers for {name}: add the lines {begin!r} and {end!r}")


def publish(name: str, data: dict, markdown: str, page: Path, top: int) -> list[Path]:
    """Make this run the committed one: docs/bench/<name>.json and .md, and the block in ``page``."""
    require_markers(page, name)
    DOCS_BENCH.mkdir(parents=True, exist_ok=True)
    json_path, md_path = DOCS_BENCH / f"{name}.json", DOCS_BENCH / f"{name}.md"
    json_path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    md_path.write_text(markdown.rstrip("\n") + "\n")
    begin, end = markers(name)
    text = page.read_text()
    start, stop = text.index(begin) + len(begin), text.index(end)
    page.write_text(text[:start] + "\n\n" + at_heading_level(markdown.strip(), top) + "\n\n" + text[stop:])
    return [json_path, md_path, page]
