"""Every relative link in README.md and docs/ points at a file that exists (and, for a `#fragment` into a markdown
file, at a heading that exists), so moving or renaming a doc cannot silently break the docs."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

FENCE = re.compile(r"^ {0,3}(```|~~~).*?^ {0,3}\1[^\n]*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`(?:[^`\n]|\n(?![ \t]*\n))*`")  # may wrap lines, not cross a paragraph
INLINE_LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.MULTILINE)
HEADING = re.compile(r"^ {0,3}#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # http:, https:, mailto:, ...


def prose(text: str) -> str:
    """The text without code blocks and inline code, where `](x)` is not a link."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def anchors(markdown: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, repeats numbered."""
    seen: dict[str, int] = {}
    out = set()
    # Headings keep their inline code's text (GitHub anchors on it); only fenced blocks are not headings.
    for title in HEADING.findall(FENCE.sub("", markdown.read_text(encoding="utf-8"))):
        title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", title)  # a linked heading anchors on its text
        slug = re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        out.add(slug if count == 0 else f"{slug}-{count}")
    return out


def broken_links(markdown: Path) -> list[str]:
    text = prose(markdown.read_text(encoding="utf-8"))
    problems = []
    for target in INLINE_LINK.findall(text) + REFERENCE_LINK.findall(text):
        if EXTERNAL.match(target):
            continue
        path_part, _, fragment = target.partition("#")
        resolved = (markdown.parent / path_part).resolve() if path_part else markdown
        if not resolved.exists():
            problems.append(f"{target}: no file {resolved}")
        elif fragment and resolved.suffix == ".md" and fragment.lower() not in anchors(resolved):
            problems.append(f"{target}: no heading '#{fragment}' in {resolved.name}")
    return problems


@pytest.mark.parametrize("markdown", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(markdown: Path):
    assert broken_links(markdown) == [], f"{markdown.relative_to(ROOT)} has broken links"


def test_the_checker_finds_broken_links_and_ignores_code(tmp_path: Path):
    (tmp_path / "other.md").write_text("# Other page\n\n## 2. A section: with punctuation\n", encoding="utf-8")
    (tmp_path / "image.png").write_bytes(b"")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n"
        "[fine](other.md) [fine anchor](other.md#2-a-section-with-punctuation) ![img](image.png)\n"
        "[own heading](#page) [web](https://example.com/missing.md) [mail](mailto:a@b.c)\n"
        "[missing file](gone.md) [missing anchor](other.md#nowhere)\n"
        "[multi-line\ntext](missing-too.md)\n"
        "`[not a link](in-code.md)` and `a span that\n[wraps]: in-code-too.md`\n"
        "```\n[not a link](in-a-block.md)\n```\n"
        "[ref]: also-gone.md\n",
        encoding="utf-8",
    )
    problems = broken_links(page)
    assert [p.split(":")[0] for p in problems] == ["gone.md", "other.md#nowhere", "missing-too.md", "also-gone.md"]
