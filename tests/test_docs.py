"""The README stays a five-minute read, and no relative link in it or in docs/ points at nothing."""
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README_MAX_LINES = 200
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^\s*(```|~~~)")


def _prose_lines(text):
    """The lines outside fenced code blocks (a link inside one is an example, not a link)."""
    in_fence = False
    for line in text.splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence:
            yield line


def _slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`|\*\*|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path):
    seen = {}
    for line in _prose_lines(path.read_text(encoding="utf-8")):
        match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            slug = _slug(match.group(1))
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            yield slug if count == 0 else f"{slug}-{count}"


def broken_links(markdown):
    """'target: why' for each relative link of `markdown` whose file or heading does not exist."""
    broken = []
    for line in _prose_lines(markdown.read_text(encoding="utf-8")):
        for target in LINK.findall(line):
            if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):  # https:, mailto:, ...
                continue
            path_part, _, anchor = target.partition("#")
            path = (markdown.parent / path_part).resolve() if path_part else markdown
            if not path.exists():
                broken.append(f"{target}: no such file")
            elif anchor and (path.is_dir() or path.suffix != ".md" or anchor not in set(anchors(path))):
                broken.append(f"{target}: no heading #{anchor} in {path.name}")
    return broken


def _documents():
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def test_the_readme_is_at_most_200_lines():
    lines = (REPO / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail into docs/"


def test_every_relative_link_in_the_readme_and_docs_points_at_an_existing_file_and_heading():
    broken = {str(doc.relative_to(REPO)): broken_links(doc) for doc in _documents()}
    assert {doc: links for doc, links in broken.items() if links} == {}


def test_the_link_check_reports_a_missing_file_a_missing_heading_and_passes_good_links(tmp_path):
    (tmp_path / "other.md").write_text("# Other page\n\n## The `lint` step: offline (fast)\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n"
        "[ok](other.md) [ok anchor](other.md#the-lint-step-offline-fast) [self](#page) [web](https://example.com)\n"
        "[gone](missing.md) [bad anchor](other.md#nowhere)\n\n"
        "```\n[in code](not-checked.md)\n```\n"
    )
    assert broken_links(page) == ["missing.md: no such file", "other.md#nowhere: no heading #nowhere in other.md"]
