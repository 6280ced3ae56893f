"""The user docs stay short, free of tracker numbers, and their relative links resolve.

Sizes are the limits the docs were cut to: a README a newcomer reads through, pages of what a feature does and how to
use it with one current table, measurement records in ``benchmarks/results/`` rather than prose diaries.
"""
from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
README_LIMIT, PAGE_LIMIT, DOCS_LIMIT = 12_000, 20_000, 60_000

# "issue 12", "issues #3", "#34" (not "#section-anchor", "C#", "&#8212;", URLs' fragments)
TRACKER_NUMBER = re.compile(r"\bissues?\s*#?\d+|\bPR\s*#?\d+|(?<![\w&/#])#\d+\b", re.IGNORECASE)
INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)


def prose(path: Path) -> str:
    """The file without its fenced code blocks (commands and program output are not links or prose)."""
    return FENCE.sub("", path.read_text(encoding="utf-8"))


def heading_anchors(path: Path) -> set[str]:
    """GitHub's anchor of each heading: lower case, punctuation dropped, spaces to hyphens, repeats numbered."""
    anchors, seen = set(), {}
    for line in prose(path).splitlines():
        if match := re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line):
            text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", match.group(1)).lower()
            slug = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN").replace(" ", "-")
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def broken_links(path: Path) -> list[str]:
    problems = []
    for target in INLINE_LINK.findall(prose(path)):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, https:, mailto:
            continue
        file_part, _, anchor = unquote(target).partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            problems.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor.lower() not in heading_anchors(linked):
            problems.append(f"{target}: no heading with that anchor in {linked.name}")
    return problems


def test_docs_exist():
    assert README.is_file() and DOCS, "README.md and docs/*.md are where these checks look"


def test_readme_is_short():
    size = README.stat().st_size
    assert size <= README_LIMIT, f"README.md is {size:,} bytes, over {README_LIMIT:,}: move details to docs/"


@pytest.mark.parametrize("page", DOCS, ids=lambda p: p.name)
def test_each_page_is_short(page):
    size = page.stat().st_size
    assert size <= PAGE_LIMIT, f"{page.name} is {size:,} bytes, over {PAGE_LIMIT:,}: one current table, no run diary"


def test_docs_total_is_short():
    sizes = {page.name: page.stat().st_size for page in DOCS}
    assert sum(sizes.values()) <= DOCS_LIMIT, f"docs/*.md hold {sum(sizes.values()):,} bytes, over {DOCS_LIMIT:,}: {sizes}"


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: p.name)
def test_no_tracker_numbers(page):
    found = [m.group(0) for m in TRACKER_NUMBER.finditer(page.read_text(encoding="utf-8"))]
    assert not found, f"{page.name} names tracker items {found}: say what the feature does instead"


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: p.name)
def test_relative_links_resolve(page):
    assert not broken_links(page), f"{page.name}: {broken_links(page)}"


def test_the_checks_can_fail(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n\nSee [gone](missing.md), [here](#title), [there](#nowhere), fixed in issue 12 and #34.\n"
                    "```\n[not a link](nothing.md)\n```\n")
    assert broken_links(page) == ["missing.md: no such file", "#nowhere: no heading with that anchor in page.md"]
    assert [m.group(0) for m in TRACKER_NUMBER.finditer(page.read_text())] == ["issue 12", "#34"]
    assert not TRACKER_NUMBER.search("[a](performance.md#every-backend-batch-1), C#, &#8212;, batch #x")
