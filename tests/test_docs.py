"""The README and docs/ hold together: every link between them leads to a page and a
heading that exist, and every page with several sections lists them first."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _headings(text: str) -> list[tuple[int, str]]:
    found, fence = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fence = not fence
        match = None if fence else re.match(r"^(#{1,6}) (.+)$", line)
        if match:
            found.append((len(match.group(1)), match.group(2)))
    return found


def _anchor(title: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def _outside_code(text: str) -> str:
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_link_leads_somewhere(page: Path) -> None:
    broken = []
    for target in LINK.findall(_outside_code(page.read_text())):
        if re.match(r"^[a-z]+:", target):
            continue  # a web address
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and anchor not in {_anchor(t) for _, t in _headings(file.read_text())}:
            broken.append(f"{target}: no such heading")
    assert not broken


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_a_page_of_several_sections_lists_them_first(page: Path) -> None:
    text = page.read_text()
    sections = [title for level, title in _headings(text) if level == 2]
    if len(sections) < 2:
        return
    contents = text.split("**Contents**", 1)
    assert len(contents) == 2, "no **Contents** list"
    listed = re.findall(r"^- \[[^\]]+\]\(#([^)]+)\)$", contents[1].split("\n## ", 1)[0], re.M)
    assert listed == [_anchor(t) for t in sections]


def test_every_page_is_named_in_the_readme() -> None:
    readme = (REPO / "README.md").read_text()
    unnamed = [p.name for p in PAGES[1:] if f"(docs/{p.name})" not in readme]
    assert not unnamed
