"""Every relative link in README.md and docs/** leads somewhere: the file (or folder) exists, and
a ``#fragment`` names a heading of the target page, spelled as GitHub spells heading anchors.

Links to other sites (``https:``, ``mailto:``) are not followed; links inside code blocks and
inline code are not links.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
_FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.S | re.M)
_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", re.M)
_EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)


def _prose(text: str) -> str:
    """The page without its fenced blocks and inline code (their brackets are not links)."""
    return _CODE.sub("", _FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lower case, punctuation other than ``-``
    and ``_`` removed, each space a hyphen."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = text.replace("`", "").replace("*", "").lower()
    text = "".join(ch for ch in text if ch.isalnum() or ch in " -_")
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors of a page's headings; a repeated heading gets ``-1``, ``-2``, … as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    for heading in _HEADING.findall(_FENCE.sub("", page.read_text(encoding="utf-8"))):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(page: Path) -> list[str]:
    return [
        target
        for target in _LINK.findall(_prose(page.read_text(encoding="utf-8")))
        if not _EXTERNAL.match(target)
    ]


def broken(page: Path, root: Path = ROOT) -> list[str]:
    """What is wrong with the page's relative links, one line each (empty: nothing); paths are
    named relative to ``root``."""
    problems = []
    for target in links(page):
        path_part, _, fragment = target.partition("#")
        destination = (page.parent / unquote(path_part)).resolve() if path_part else page
        where = f"{page.relative_to(root)}: link {target!r}"
        if not destination.exists():
            problems.append(f"{where}: no file {destination.relative_to(root)}")
        elif fragment and destination.suffix == ".md" and fragment not in anchors(destination):
            problems.append(
                f"{where}: {destination.relative_to(root)} has no heading with anchor "
                f"#{fragment}; fix the link or the heading"
            )
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_leads_to_a_file_and_heading(page: Path) -> None:
    assert broken(page) == []


def test_the_checker_sees_a_broken_link_and_a_missing_anchor(tmp_path: Path) -> None:
    tmp_path = tmp_path.resolve()
    (tmp_path / "b.md").write_text("# Some `code` heading (v2)!\n\n## Again\n## Again\n")
    page = tmp_path / "a.md"
    page.write_text(
        "[ok](b.md#some-code-heading-v2) [twice](b.md#again-1) [gone](c.md) "
        "[no anchor](b.md#nowhere) `[code](x.md)` [web](https://example.com/x.md)\n"
        "```\n[fenced](y.md)\n```\n"
    )
    problems = broken(page, tmp_path)
    assert len(problems) == 2, problems
    assert "no file c.md" in problems[0]
    assert "#nowhere" in problems[1]
    assert slug("The reference experiment (`bench/bench_simulate_reference.py`)") == (
        "the-reference-experiment-benchbench_simulate_referencepy"
    )
