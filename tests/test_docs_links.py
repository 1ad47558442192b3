"""Every relative link in README.md and docs/ resolves: the file, and its #anchor as GitHub renders headings."""

import re
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

import pytest

from mar_builder.constants import REPO_ROOT

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
FENCE = re.compile(r"^\s*(```|~~~)")


def documents() -> List[Path]:
    return [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("**/*.md"))]


def prose_lines(path: Path) -> Iterator[Tuple[int, str]]:
    """The lines outside fenced code blocks, numbered from 1."""
    fenced = False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            yield number, line


def github_slug(heading: str) -> str:
    """GitHub's heading anchor: markup and punctuation dropped, lower case, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = re.sub(r"[`*_~]|<[^>]+>", lambda m: "_" if m.group(0) == "_" else "", text)
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


_anchors: Dict[Path, Set[str]] = {}


def anchors(path: Path) -> Set[str]:
    if path not in _anchors:
        seen: Dict[str, int] = {}
        found = set()
        for _, line in prose_lines(path):
            match = HEADING.match(line)
            if match:
                slug = github_slug(match.group(2))
                found.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
                seen[slug] = seen.get(slug, 0) + 1
        _anchors[path] = found
    return _anchors[path]


def relative_links() -> List[Tuple[Path, int, str]]:
    links = []
    for doc in documents():
        for number, line in prose_lines(doc):
            line = re.sub(r"`[^`]*`", "", line)  # code spans are not links
            for target in LINK.findall(line):
                if not re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, mailto: and the like
                    links.append((doc, number, target))
    return links


def test_github_slugs_follow_githubs_rules():
    assert github_slug("Preprocessing exactly as trained") == "preprocessing-exactly-as-trained"
    assert github_slug("`make bench`: what it measures") == "make-bench-what-it-measures"
    assert github_slug("KServe v1/v2 (and Triton's client)") == "kserve-v1v2-and-tritons-client"


def link_id(value: object) -> str:
    return value.name if isinstance(value, Path) else str(value)


@pytest.mark.parametrize("doc, line, target", relative_links(), ids=link_id)
def test_relative_link_resolves(doc: Path, line: int, target: str):
    file_part, _, anchor = target.partition("#")
    path = (doc.parent / file_part).resolve() if file_part else doc
    assert path.exists(), f"{doc.name}:{line}: {target} -> {path} does not exist"
    if anchor and path.suffix == ".md":
        assert anchor in anchors(path), f"{doc.name}:{line}: no heading #{anchor} in {path.name}"
