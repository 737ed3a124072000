"""The Japanese edition keeps pace with the English one: every page, section, snippet and checkpoint."""

import re

import pytest

from tests.support import ROOT

DOCS = ROOT / "docs"
HEADING = re.compile(r"^(#{1,6}) ", re.M)
SNIPPET = re.compile(r'^--8<-- "([^"]+)"', re.M)
IMAGE = re.compile(r"!\[[^\]]*\]\(([^)]+)\)")
CHECKPOINT = re.compile(r"<!-- checkpoint(: terminal 1)? -->\s*```console\n(.*?)```", re.S)
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def english_pages():
    """Every English page (the Japanese ones end in .ja.md)."""
    return sorted(page for page in DOCS.glob("*.md") if not page.name.endswith(".ja.md"))


def outline(text):
    """What a translation must keep: heading levels, snippets, images and checkpoints, in order."""
    prose = FENCE.sub("", text)  # a '#' inside a code block is a comment, not a heading
    return {
        "headings": [len(level) for level in HEADING.findall(prose)],
        "snippets": SNIPPET.findall(text),
        "images": IMAGE.findall(text),
        "checkpoints": CHECKPOINT.findall(text),
    }


@pytest.mark.parametrize("page", english_pages(), ids=lambda page: page.stem)
def test_japanese_page_keeps_pace(page):
    translation = page.with_name(f"{page.stem}.ja.md")
    assert translation.exists(), f"{page.name} has no Japanese counterpart {translation.name}"
    english, japanese = outline(page.read_text()), outline(translation.read_text())
    for part in english:
        assert japanese[part] == english[part], f"{translation.name} lags {page.name} in its {part}"


LINK_TO_ANCHOR = re.compile(r"\]\(([\w-]+)\.md#([\w-]+)\)")
ANCHOR = re.compile(r'<a id="([\w-]+)"></a>')


def heading_ids(text):
    """The ids Python-Markdown's toc gives a page's headings (ASCII only: a Japanese heading gets none worth linking)."""
    ids = set()
    for line in FENCE.sub("", text).splitlines():
        if HEADING.match(line):
            title = re.sub(r"`|\*\*", "", line.lstrip("#").strip())
            ascii_title = title.encode("ascii", "ignore").decode()
            ids.add(re.sub(r"[-\s]+", "-", re.sub(r"[^\w\s-]", "", ascii_title).strip().lower()))
    return ids


@pytest.mark.parametrize("page", sorted(DOCS.glob("*.md")), ids=lambda page: page.name)
def test_every_link_to_a_section_finds_it_in_the_same_language(page):
    """A link `other.md#id` in page.ja.md leads to other.ja.md: that page must have the id (an <a id> or a heading's)."""
    suffix = ".ja.md" if page.name.endswith(".ja.md") else ".md"
    missing = []
    for target, anchor in LINK_TO_ANCHOR.findall(page.read_text()):
        text = (DOCS / f"{target}{suffix}").read_text()
        if anchor not in set(ANCHOR.findall(text)) | heading_ids(text):
            missing.append(f"{target}{suffix}#{anchor}")
    assert not missing, missing
