"""MkDocs hook: fills the reference pages' ``<!-- generated: NAME -->`` markers from the code."""

from __future__ import annotations

import re

import gen_reference

GENERATORS = {
    "config": gen_reference.config_markdown, "cli": gen_reference.cli_markdown, "stages": gen_reference.stages_markdown,
}
MARKER = re.compile(r"<!-- generated: (\w+) -->")


def _generate(match: re.Match) -> str:
    name = match.group(1)
    if name not in GENERATORS:
        raise ValueError(f"unknown generated section {name!r} (known: {', '.join(GENERATORS)})")
    return GENERATORS[name]()


def on_page_markdown(markdown: str, **_) -> str:
    """Replace each marker with the Markdown its generator writes."""
    return MARKER.sub(_generate, markdown)
